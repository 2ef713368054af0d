"""The value rule for AE titles (PS3.5 6.2), in one place.

Invariants:
- `is_ae_title` is the one rule for an AE title a user configures or types (profile, command line)
  and for the AE titles a DIMSE command carries: 1 to 16 characters of the default repertoire
  (0x20-0x7E), no backslash (the value delimiter), not all spaces.
- Pure functions, no imports: every layer may use them.
"""

from __future__ import annotations

AE_TITLE_RULE = "an AE title (1-16 printable ASCII characters, no backslash, not all spaces)"


def is_ae_title(value: object) -> bool:
    return (
        isinstance(value, str)
        and 1 <= len(value) <= 16
        and all(0x20 <= ord(c) <= 0x7E for c in value)
        and "\\" not in value
        and value.strip(" ") != ""
    )


__all__ = ["AE_TITLE_RULE", "is_ae_title"]
