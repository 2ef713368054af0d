"""Workflows: what joins a device to the DICOM services.

- `modality`: the acquisition modality's durable per-procedure state machine (device events -> worklist
  item, MPPS, stored / sent / committed instances, film).
- `mapping`: worklist item -> image attributes (PS3.17 Annex J); `selection`: which item a procedure
  performs; `reasons`: a device's abort reason -> CID 9300 code; `device`: opening the `[device]` driver
  and the commitment settings its images use.
This layer uses services, stores and `drivers/base.py`; it never opens sockets itself.
"""
