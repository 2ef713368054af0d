"""Opening the `[device]` driver, and the Storage Commitment settings device images are committed with.

- The driver is opened once, at start-up (like the printer): its factory validates its options and a
  `DriverOptionError(key, expected)` becomes a ProfileError naming `device.options.KEY` (exit 78); an
  unknown driver names `device.driver` with the installed ones.
- The agent has one Storage Commitment requester. `[device] commit_with` either is that requester (no
  `[storage] commit_with`) or names the same peer; its tuning (commit_batch, commit_idle, ...) comes
  from `[storage]` when the section exists. The destinations whose C-STOREs must be done before an
  instance is put in a request are `[device] send_to` (plus `[storage] forward_to` when both share it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agent.profile import Profile, StorageSettings, open_driver
from drivers.base import AcquisitionDriver


def open_device_driver(profile: Profile) -> AcquisitionDriver:
    return open_driver(profile, "device")  # type: ignore[return-value]


def requester_settings(profile: Profile) -> StorageSettings | None:
    """The settings of the agent's one Storage Commitment requester (module docstring), or the
    `[storage]` section as it is when the device asks for no commitment."""
    s, d = profile.storage, profile.device
    if d is None or d.commit_with is None:
        return s
    if s is not None and s.commit_with == d.commit_with:
        return dataclasses.replace(s, forward_to=tuple(dict.fromkeys(s.forward_to + d.send_to)))
    base: Any = s if s is not None else StorageSettings()
    return dataclasses.replace(base, forward_to=d.send_to, commit_with=d.commit_with)  # type: ignore[no-any-return]


__all__ = ["open_device_driver", "requester_settings"]
