"""Option checking shared by the printer drivers, and the capabilities every driver declares.

Options arrive as plain TOML values (the profile's `[print.options]` table). Every driver names the
keys it knows; any other key is refused (a key that would do nothing must not be silently accepted),
and each value is checked for type and range. Errors are `DriverOptionError(key, expected)`.

The common capability keys (all optional):
- `film_sizes`: Film Size IDs (2010,0050) the printer holds, PS3.3 C.13.8 defined terms.
- `dpi`: resolution of the rendered raster, dots per inch.
- `min_density`, `max_density`: the printer's density range in hundredths of optical density
  (PS3.3 C.13.3 uses the same unit for Min/Max Density).
- `color`: whether the device prints RGB.
- `drive_bits`: bits per drive level (8 unless the driver allows 16).
- `curve`: the characteristic curve `[[od, level], ...]`, density ascending; without it the curve is
  the sRGB encoding of transmittance (drivers.base.screen_curve): the film file looks on a screen as
  the film does on a light box.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path

from drivers.base import FILM_SIZES_MM, DriverOptionError, PrinterCapabilities, screen_curve


CAPABILITY_KEYS = frozenset({"film_sizes", "dpi", "min_density", "max_density", "color", "drive_bits", "curve"})

# Densities beyond 5.0 OD are not printable by any film or paper device (PS3.3 C.13.3 notes typical
# Max Density around 3.0); refusing them catches typos such as 3000 for 300.
MAX_DENSITY_LIMIT = 500


class Options:
    """A driver's options, checked key by key; `done()` refuses the keys nobody asked for."""

    def __init__(self, raw: Mapping[str, object], known: Iterable[str]) -> None:
        self._raw = dict(raw)
        self._known = frozenset(known)
        for key in self._raw:
            if key not in self._known:
                close = difflib.get_close_matches(key, sorted(self._known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise DriverOptionError(key, f"not an option of this driver; known: {', '.join(sorted(self._known))}{hint}")

    def has(self, key: str) -> bool:
        return key in self._raw

    def string(self, key: str, default: str | None, choices: Iterable[str] | None = None) -> str | None:
        value = self._raw.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise DriverOptionError(key, "a non-empty string")
        if choices is not None:
            allowed = tuple(choices)
            if value.lower() not in allowed:
                raise DriverOptionError(key, f"one of {', '.join(allowed)}, not {value!r}")
            return value.lower()
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self._raw.get(key, default)
        # bool is an int in Python; `dpi = true` is a typo, not 1.
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise DriverOptionError(key, f"an integer from {low} to {high}, not {value!r}")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self._raw.get(key, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
            raise DriverOptionError(key, f"a number from {low:g} to {high:g}, not {value!r}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._raw.get(key, default)
        if not isinstance(value, bool):
            raise DriverOptionError(key, f"true or false, not {value!r}")
        return value

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._raw.get(key, list(default))
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise DriverOptionError(key, "a list of non-empty strings")
        return tuple(value)

    def path(self, key: str, default: Path, base: Path) -> Path:
        """A path; a relative one is taken relative to `base` (the agent's data_dir)."""
        value = self._raw.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise DriverOptionError(key, "a path (string)")
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path

    def capabilities(
        self, *, model_name: str, color: bool = False, drive_bits: tuple[int, ...] = (8,), printer_name: str = "dicom-agent"
    ) -> PrinterCapabilities:
        """The capabilities from the common keys (see the module docstring)."""
        sizes = self.strings("film_sizes", tuple(FILM_SIZES_MM))
        if not sizes:
            raise DriverOptionError("film_sizes", "at least one Film Size ID")
        for size in sizes:
            if size not in FILM_SIZES_MM:
                raise DriverOptionError("film_sizes", f"Film Size IDs of PS3.3 ({', '.join(FILM_SIZES_MM)}), not {size!r}")
        dpi = self.integer("dpi", 300, 50, 1200)
        low = self.integer("min_density", 20, 0, MAX_DENSITY_LIMIT)
        high = self.integer("max_density", 300, 1, MAX_DENSITY_LIMIT)
        if low >= high:
            raise DriverOptionError("min_density", f"less than max_density ({high}), not {low}")
        is_color = self.boolean("color", color)
        bits = self.integer("drive_bits", drive_bits[0], 1, 16)
        if bits not in drive_bits:
            raise DriverOptionError("drive_bits", f"one of {', '.join(map(str, drive_bits))} for this driver, not {bits}")
        if is_color and bits != 8:
            raise DriverOptionError("drive_bits", "8 when color = true")
        curve = self._curve(bits, low, high) or screen_curve(low / 100, high / 100, bits)
        return PrinterCapabilities(
            film_sizes=sizes, dpi=dpi, min_density=low, max_density=high, color=is_color, drive_bits=bits,
            characteristic_curve=curve, printer_name=printer_name, model_name=model_name,
        )

    def _curve(self, bits: int, low: int, high: int) -> tuple[tuple[float, int], ...]:
        value = self._raw.get("curve")
        if value is None:
            return ()
        top = (1 << bits) - 1
        expected = f"a list of at least two [od, level] pairs, od ascending, level 0..{top}"
        if not isinstance(value, (list, tuple)) or len(value) < 2:
            raise DriverOptionError("curve", expected)
        points: list[tuple[float, int]] = []
        for pair in value:
            if (
                not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not isinstance(pair[0], (int, float)) or isinstance(pair[0], bool)
                or not isinstance(pair[1], int) or isinstance(pair[1], bool)
                or not 0.0 <= pair[0] <= MAX_DENSITY_LIMIT / 100 or not 0 <= pair[1] <= top
            ):
                raise DriverOptionError("curve", f"{expected}; bad pair {pair!r}")
            if points and pair[0] <= points[-1][0]:
                raise DriverOptionError("curve", f"{expected}; density {pair[0]} is not above {points[-1][0]}")
            points.append((float(pair[0]), pair[1]))
        # The renderer looks densities up between Min and Max Density; a curve that stops short would
        # leave part of the range to extrapolation nobody measured.
        if points[0][0] > low / 100 or points[-1][0] < high / 100:
            raise DriverOptionError(
                "curve", f"to cover the density range {low / 100:.2f}..{high / 100:.2f} OD, not {points[0][0]}..{points[-1][0]}"
            )
        return tuple(points)


__all__ = ["CAPABILITY_KEYS", "FILM_SIZES_MM", "Options"]
