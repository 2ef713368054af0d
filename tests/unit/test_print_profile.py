"""`[print]` keys of the Print SCP: the driver must be installed, its options are checked by the driver
when the agent starts (exit 78 naming print.options.KEY), formats and poll_interval are validated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import ProfileError
from agent.profile import load_profile, parse_profile


def test_unknown_driver_names_the_key_and_the_installed_drivers() -> None:
    with pytest.raises(ProfileError) as err:
        parse_profile({"print": {"serve": True, "driver": "fiel"}}, source="p.toml")
    text = str(err.value)
    assert "print.driver" in text and "'fiel'" in text and "file" in text and "sim" in text
    assert "did you mean 'file'" in text


@pytest.mark.parametrize("key, value", [("formats", ["SLIDE"]), ("formats", "STANDARD"), ("poll_interval", -1)])
def test_bad_print_keys_are_refused(key: str, value: object) -> None:
    with pytest.raises(ProfileError) as err:
        parse_profile({"print": {"serve": True, key: value}}, source="p.toml")
    assert f"print.{key}" in str(err.value)


def test_defaults_and_film_printer_profile() -> None:
    p = parse_profile({"print": {"serve": True, "driver": "sim"}}, source="p.toml").print
    assert p is not None and p.formats == ("STANDARD", "ROW", "COL") and p.poll_interval == 3.0
    shipped = load_profile(Path(__file__).parents[2] / "profiles" / "film-printer.toml").print
    assert shipped is not None and shipped.serve and shipped.driver == "file"


def test_bad_driver_option_stops_the_agent_with_78(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text(f"""
[agent]
bind = "127.0.0.1"
port = 0
data_dir = "{tmp_path / 'data'}"
[print]
serve = true
driver = "file"
[print.options]
dpi = "lots"
""")
    result = subprocess.run([sys.executable, "-m", "agent", "run", "--profile", str(profile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78, result.stderr
    assert "print.options.dpi" in result.stderr
