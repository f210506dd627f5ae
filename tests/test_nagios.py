"""duct.lib.nagios: the plugin protocol, on output the monitoring-plugins print."""

from __future__ import annotations

from duct.lib.nagios import PerfDatum, alerts, datumState, parseOutput, parsePerfData, stateOf

CHECK_LOAD = (
    "LOAD OK - total load average: 1.33, 1.87, 1.75|load1=1.330;5.000;10.000;0; "
    "load5=1.870;4.000;8.000;0; load15=1.750;3.000;6.000;0; \n"
)
CHECK_DISK = (
    "DISK OK - free space: / 76970MiB (74% inode=96%);| "
    "/=28233957376B;243497277849;257024904396;0;270552530944\n"
)
CHECK_PROCS = "PROCS OK: 111 processes | procs=111;1000;;0;\n"
LONG = (
    "DISK WARNING - free space: /srv 10 MB (5%);\n"
    "/srv is nearly full\n"
    "more detail | '/srv data'=90%;80;95;0;100 'it''s'=3s\n"
    "'other one'=0.5;;;\n"
)


def test_check_load() -> None:
    out = parseOutput(CHECK_LOAD)
    assert out.summary == "LOAD OK - total load average: 1.33, 1.87, 1.75"
    assert [d.label for d in out.perfdata] == ["load1", "load5", "load15"]
    assert out.perfdata[0] == PerfDatum("load1", 1.33, "", "5.000", "10.000", 0.0, None)


def test_check_disk_units_and_labels_with_slashes() -> None:
    (datum,) = parseOutput(CHECK_DISK).perfdata
    assert datum.label == "/" and datum.value == 28233957376 and datum.unit == "B"
    assert datum.max == 270552530944


def test_empty_thresholds() -> None:
    (datum,) = parseOutput(CHECK_PROCS).perfdata
    assert datum == PerfDatum("procs", 111.0, "", "1000", None, 0.0, None)


def test_long_output_and_perfdata_on_later_lines() -> None:
    out = parseOutput(LONG)
    assert out.summary.startswith("DISK WARNING")
    assert out.longOutput == "/srv is nearly full\nmore detail"
    assert [(d.label, d.value, d.unit) for d in out.perfdata] == [
        ("/srv data", 90.0, "%"),
        ("it's", 3.0, "s"),
        ("other one", 0.5, ""),
    ]


def test_unknown_values_and_garbage() -> None:
    data = parsePerfData("a=U;1;2 junk b= c=1e3KB d=-2.5")
    assert [(d.label, d.value, d.unit) for d in data] == [
        ("a", None, ""),
        ("c", 1000.0, "KB"),
        ("d", -2.5, ""),
    ]
    assert parseOutput("") == ("", "", [])


def test_states() -> None:
    assert [stateOf(c)[0] for c in (0, 1, 2, 3)] == ["ok", "warning", "critical", "unknown"]
    state, why = stateOf(7)
    assert state == "unknown" and "7" in (why or "")
    assert stateOf(-9) == ("critical", "killed by signal 9")


def test_ranges() -> None:
    assert alerts("10", 11) and alerts("10", -1) and not alerts("10", 5)
    assert alerts("10:", 9) and not alerts("10:", 1e9)
    assert alerts("~:10", 11) and not alerts("~:10", -1e9)
    assert alerts("@10:20", 15) and not alerts("@10:20", 25)
    assert not alerts("bad", 1) and not alerts(None, 1)
    datum = parsePerfData("x=90;80;95")[0]
    assert datumState(datum) == "warning"
    assert datumState(parsePerfData("x=99;80;95")[0]) == "critical"
