"""Reference printer drivers, each registered as an entry point of group `dicom_agent.drivers`:

- `printer.file` (drivers.printer.file): PNG, TIFF or PDF files at the film's physical size.
- `printer.cups` (drivers.printer.cups): a CUPS queue, through `lp` and `lpstat`.
- `printer.raw` (drivers.printer.raw): PostScript to a device node or a serial port.
- `printer.sim` (drivers.printer.sim): a simulated printer with supply, jams and status changes.

Each module's `open_driver(options, data_dir)` is the factory; options are checked by
drivers.printer.options and a wrong one raises drivers.base.DriverOptionError naming it.
"""
