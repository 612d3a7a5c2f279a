"""The systemd units: the settings ARCHITECTURE section 5 asks for, and `systemd-analyze verify`."""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNITS = ("cabbage.service", "cabbage@.service")


def service_section(unit: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(SYSTEMD_DIR / unit)
    return dict(parser["Service"])


def environment_example() -> dict[str, str]:
    lines = (SYSTEMD_DIR / "cabbage.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.mark.parametrize("unit", UNITS)
def test_the_unit_has_the_settings_of_the_architecture(unit: str) -> None:
    service = service_section(unit)
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "KillMode": "mixed",
        "OOMPolicy": "continue",
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "User": "cabbage",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert int(service["WatchdogSec"]) > 0
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["ExecStart"].endswith("/cabbage-supervisor")  # every option from the env file


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_waits_longer_than_the_graceful_timeout(unit: str) -> None:
    graceful_timeout_s = float(environment_example()["CABBAGE_GRACEFUL_TIMEOUT"])
    assert float(service_section(unit)["TimeoutStopSec"]) >= graceful_timeout_s + 5


def test_the_template_reads_one_environment_file_per_instance() -> None:
    assert service_section("cabbage@.service")["EnvironmentFile"] == "/etc/cabbage/%i.env"
    assert service_section("cabbage.service")["EnvironmentFile"] == "/etc/cabbage/cabbage.env"


def test_the_environment_example_sets_known_variables_only() -> None:
    from supervisor.config import OPTIONS

    known = {option.variable for option in OPTIONS} | {"PYTHONPATH"}
    example = environment_example()
    assert set(example) <= known
    assert "CABBAGE_APP" in example and "CABBAGE_DSN" in example
    assert all(not re.search(r"\s#", value) for value in example.values()), "EnvironmentFile has no trailing comments"


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_accepts_the_unit(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (apt-get install systemd): units not verified")
    # verify checks that ExecStart exists: point it at the cabbage-supervisor under test.
    installed = Path(sys.executable).with_name("cabbage-supervisor")
    assert installed.exists(), f"cabbage-supervisor is not installed next to {sys.executable}"
    text = (SYSTEMD_DIR / unit).read_text()
    (tmp_path / unit).write_text(re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={installed}", text))
    result = subprocess.run([analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, output
