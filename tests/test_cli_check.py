"""``duct check`` and ``twistd duct`` on real files, run as the user would run them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60

BAD = """\
outputs:
  - output: duct.outputs.logger.Logger
sources:
  - service: load
    source: duct.sources.linux.basic.LoadAverage
  - service: cpu
    source: duct.sources.linux.basic.CPU
    colour: red
  - service: memory
    source: duct.sources.linux.basic.Memory
    critical: {memory: "gt 0.9"}
  - service: disk
    source: duct.sources.linux.basic.DiskFree
    route: nowhere
"""

# (item, key, words): each must appear together on one line of the report.
BAD_PROBLEMS = [
    ("sources[1] (service: cpu)", "colour", "unknown key"),
    ("sources[2] (service: memory)", "critical", "gt 0.9"),
    ("sources[3] (service: disk)", "route", "'nowhere'"),
]

GOOD = """\
interval: 5.0
outputs:
  - output: duct.outputs.logger.Logger
  - output: duct.outputs.null.Null
    name: blackhole
    maxsize: 1000
    overflow: drop_oldest
sources:
  - service: cpu
    source: duct.sources.linux.basic.CPU
    route: blackhole
  - service: load
    source: duct.sources.linux.basic.LoadAverage
    interval: 10.0
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "duct.cli", "check", "-c", str(path))


def twistd(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``twistd -n duct -c path``, with the twistd of this interpreter's environment."""
    script = Path(sys.executable).parent / "twistd"
    command = [str(script)] if script.exists() else [sys.executable, "-c", _TWISTD]
    return run(*command, "--nodaemon", "--pidfile=", "duct", "-c", str(path), cwd=cwd)


_TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def lineWith(text: str, *parts: str) -> str:
    lines = [line for line in text.splitlines() if all(part in line for part in parts)]
    assert len(lines) == 1, f"expected one line with {parts} in:\n{text}"
    return lines[0]


def test_check_reports_every_problem_with_file_item_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "duct.yml", BAD)
    result = check(path)
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert f"{path}: 3 error(s)" in result.stderr
    for item, key, words in BAD_PROBLEMS:
        line = lineWith(result.stderr, f"{path}: {item}: {key}: ")
        assert words in line


def test_check_reports_yaml_errors_without_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path / "duct.yml", "ttl: 60.0\ninterval: 1.0\n  bad: indent\n")
    result = check(path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "line 3, column 6" in lineWith(result.stderr, str(path), "YAML syntax error")


def test_check_reports_a_config_of_the_wrong_shape_without_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path / "duct.yml", "sources: 5\nblueprint: 5\ntoolbox: {web: 5}\n")
    result = check(path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lineWith(result.stderr, f"{path}: sources: expected a list")
    lineWith(result.stderr, f"{path}: blueprint: expected a list")
    lineWith(result.stderr, f"{path}: toolbox (web): expected a mapping")


def test_check_on_a_valid_config_lists_what_would_run(tmp_path: Path) -> None:
    path = write(tmp_path / "duct.yml", GOOD)
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "error" not in result.stderr
    out = result.stdout
    assert out.splitlines()[0] == f"{path}: valid"
    outputs = out.index("outputs:")
    sources = out.index("sources:")
    assert outputs < sources
    logger = lineWith(out, "Logger: duct.outputs.logger.Logger")
    assert "100000 events" in logger and "block" in logger
    blackhole = lineWith(out, "blackhole: duct.outputs.null.Null")
    assert "1000 events" in blackhole and "drop_oldest" in blackhole
    notes = [line for line in out.splitlines() if "memory-only buffer" in line]
    assert len(notes) == 2  # one for each output
    assert all("lost if the agent crashes" in note for note in notes)
    cpu = lineWith(out, "cpu: duct.sources.linux.basic.CPU")
    assert "every 5.0s" in cpu and cpu.endswith("-> blackhole")
    load = lineWith(out, "load: duct.sources.linux.basic.LoadAverage")
    # No route: the outputs without a name (here Logger), as the original routes.
    assert "every 10.0s" in load and load.endswith("-> Logger")
    assert out.index(cpu) > sources and out.index(load) > sources


def test_check_on_a_missing_file_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "missing.yml"
    result = check(path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lineWith(result.stderr, f"{path}: cannot read")


def test_twistd_refuses_a_bad_config_with_the_errors_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path / "duct.yml", BAD)
    result = twistd(path, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert "invalid configuration" in result.stderr
    for item, key, words in BAD_PROBLEMS:
        line = lineWith(result.stderr, f"{path}: {item}: {key}: ")
        assert words in line
    assert not (tmp_path / "twistd.pid").exists()


def test_check_shows_the_default_riemann_output_of_an_old_style_config(tmp_path: Path) -> None:
    path = write(tmp_path / "duct.yml", "server: localhost\nport: 5555\n")
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "RiemannTCP: duct.outputs.riemann.RiemannTCP" in result.stdout


def test_check_says_which_buffers_survive_a_crash(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        outputs:
          - output: duct.outputs.null.Null
            name: durable
            buffer: {{type: disk, path: {tmp_path / "spool"}}}
          - output: duct.outputs.null.Null
            name: volatile
        """,
    )
    result = check(path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    durable = lines.index(lineWith(result.stdout, "durable: duct.outputs.null.Null"))
    volatile = lines.index(lineWith(result.stdout, "volatile: duct.outputs.null.Null"))
    assert "disk buffer" in lines[durable]
    assert "memory-only buffer" not in lines[durable + 1]
    assert "memory buffer" in lines[volatile] and "memory-only buffer" in lines[volatile + 1]


def test_check_says_where_the_web_server_listens(tmp_path: Path) -> None:
    result = check(write(tmp_path / "duct.yml", GOOD))
    assert lineWith(result.stdout, "web:") == "web: none (no web: key, no port opened)"
    path = write(tmp_path / "web.yml", 'web: {listen: "tcp:9000", token: t}\nself_events: true\n')
    result = check(path)
    assert result.returncode == 0, result.stderr
    web = lineWith(result.stdout, "web:")
    assert web.startswith("web: tcp:9000 (") and "a bearer token" in web
    assert "duct: duct.sources.selfstats.SelfStats every 10.0s -> (no outputs)" in result.stdout


def test_check_fails_when_a_listener_port_is_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        config = (
            "outputs: [{output: duct.outputs.null.Null}]\n"
            "sources:\n"
            f'  - {{service: relay, source: duct.sources.riemann.RiemannTCP, listen: "{busy}"}}\n'
        )
        result = check(write(tmp_path / "duct.yml", config))
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    line = lineWith(result.stderr, f"{tmp_path / 'duct.yml'}: sources[0] (service: relay): listen:")
    assert f"cannot listen on {busy}: " in line and "in use" in line


def test_check_binds_and_releases_free_listener_ports(tmp_path: Path) -> None:
    config = (
        "web: {listen: 'tcp:0:interface=127.0.0.1'}\n"
        "sources:\n"
        "  - {service: relay, source: duct.sources.riemann.RiemannTCP, listen: 'tcp:0'}\n"
        "  - {service: dgram, source: duct.sources.riemann.RiemannUDP, port: 0}\n"
    )
    result = check(write(tmp_path / "duct.yml", config))
    assert result.returncode == 0, result.stderr
    assert "cannot listen" not in result.stderr


def test_check_prints_a_note_and_a_warning_for_an_original_config(tmp_path: Path) -> None:
    path = tmp_path / "duct.yml"
    path.write_text(
        textwrap.dedent(
            f"""\
            include_path: {tmp_path / "conf.d"}
            outputs:
              - output: duct.outputs.riemann.RiemannTCP
                server: 127.0.0.1
                interval: 1.0
            sources:
              - service: relay
                source: duct.sources.riemann.RiemannTCP
                port: 5555
            """
        )
    )
    result = check(path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    [warning] = [line for line in lines if line.startswith("warning: ")]
    assert "conf.d does not exist" in warning
    [note] = [line for line in lines if line.startswith("note: ")]
    assert "sources[0] (service: relay)" in note and "127.0.0.1 only" in note
    assert "relay: duct.sources.riemann.RiemannTCP" in result.stdout
    assert result.stdout.rstrip().endswith("web: none (no web: key, no port opened)")


def test_check_names_the_key_of_a_tls_listener_whose_key_file_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    config = (
        "workers: 2\n"
        "sources:\n"
        "  - service: tls\n"
        "    source: duct.sources.riemann.RiemannTCP\n"
        f"    listen: 'ssl:0:privateKey={missing}'\n"
    )
    result = check(write(tmp_path / "duct.yml", config))
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    line = lineWith(result.stderr, f"{tmp_path / 'duct.yml'}: sources[0] (service: tls): listen:")
    assert "missing.pem" in line
