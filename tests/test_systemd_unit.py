"""contrib/systemd/duct.service is a unit systemd accepts."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "contrib" / "systemd" / "duct.service"


def test_unit_runs_twistd_in_the_foreground_with_state_directory() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    service = unit["Service"]
    assert service["ExecStart"] == (
        "/usr/bin/twistd --nodaemon --pidfile= duct --config /etc/duct/duct.yml"
    )
    assert service["StateDirectory"] == "duct"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # scripts/test-deps.sh installs systemd for make test.
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: run scripts/test-deps.sh"
    # Point the commands at this environment's scripts: verify checks they exist.
    bindir = Path(sys.executable).parent
    text = UNIT.read_text()
    text = text.replace("/usr/bin/twistd", str(bindir / "twistd"))
    text = text.replace("/usr/bin/duct", str(bindir / "duct"))
    unit = tmp_path / "duct.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
