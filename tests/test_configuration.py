"""Loading and validating duct.yml: every problem named by file, item and key."""

from __future__ import annotations

import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from duct.configuration import Config, ConfigFile, ConfigurationError, Problem
from duct.outputs.logger import Logger
from duct.outputs.null import Null
from duct.sources.linux.basic import CPU, LoadAverage, Memory

CPU_PATH = "duct.sources.linux.basic.CPU"
LOAD_PATH = "duct.sources.linux.basic.LoadAverage"
MEMORY_PATH = "duct.sources.linux.basic.Memory"
LOGGER_PATH = "duct.outputs.logger.Logger"
NULL_PATH = "duct.outputs.null.Null"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(path: Path) -> Config:
    return ConfigFile(str(path)).load()


def problemsOf(path: Path) -> list[Problem]:
    with pytest.raises(ConfigurationError) as info:
        load(path)
    problems = info.value.problems
    assert problems, "a ConfigurationError must carry at least one problem"
    # The exception's message is every problem, one a line.
    assert str(info.value).splitlines() == [str(p) for p in problems]
    return problems


def findProblem(
    problems: list[Problem], file: Path | str, item: str | None, key: str | None, *words: str
) -> Problem:
    """The one problem at (file, item, key); its text names all three and ``words``."""
    matches = [p for p in problems if (p.file, p.item, p.key) == (str(file), item, key)]
    assert len(matches) == 1, f"expected one problem at {file}: {item}: {key}, got {problems}"
    problem = matches[0]
    text = str(problem)
    assert text.startswith(f"{file}: ")
    for part in (item, key, *words):
        if part is not None:
            assert part in text, f"{part!r} not in {text!r}"
    return problem


def where(problems: list[Problem]) -> Counter[tuple[str, str | None, str | None]]:
    return Counter((p.file, p.item, p.key) for p in problems)


@pytest.fixture
def legacyModule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of plugins written before options were declared, importable by name."""
    name = "duct_test_legacy_plugins"
    write(
        tmp_path / "plugins" / f"{name}.py",
        '''
        from duct.objects import Output, Source


        class LegacySource(Source):
            """Declares no options: its extra keys pass through with a warning."""

            def get(self):
                return None


        class LegacyOutput(Output):
            def writeBatch(self, events):
                return None
        ''',
    )
    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    return name


# -- 1. YAML syntax --------------------------------------------------------------


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        """\
        ttl: 60.0
        interval: 1.0
          bad: indent
        """,
    )
    [problem] = problemsOf(path)
    assert (problem.file, problem.item, problem.key) == (str(path), None, None)
    assert "YAML syntax error" in problem.message
    assert "line 3, column 6" in problem.message
    assert str(problem).startswith(f"{path}: ")


def test_yaml_unclosed_flow_mapping_reports_where_it_ends(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        """\
        sources:
          - service: cpu
            source: duct.sources.linux.basic.CPU
            critical: {cpu: "> 0.8"
        """,
    )
    [problem] = problemsOf(path)
    assert problem.file == str(path)
    assert "line 5, column 1" in problem.message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "duct.yml", "- service: cpu\n- service: load\n")
    [problem] = problemsOf(path)
    assert problem.file == str(path)
    assert "top level must be a mapping" in problem.message


def test_missing_file_is_a_problem_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yml"
    [problem] = problemsOf(path)
    assert problem.file == str(path)
    assert "cannot read" in problem.message


# -- 2. wrong types ----------------------------------------------------------------


def test_wrong_types_each_name_file_item_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        ttl: [1]
        outputs:
          - output: {LOGGER_PATH}
            maxsize: big
            overflow: explode
        sources:
          - service: load
            source: {LOAD_PATH}
          - service: memory
            source: {MEMORY_PATH}
            tags: 5
          - service: cpu
            source: {CPU_PATH}
            interval: "fast"
            watchdog: "yes"
        """,
    )
    problems = problemsOf(path)
    findProblem(problems, path, None, "ttl", "expected a number", "[1]")
    findProblem(problems, path, "sources[1] (service: memory)", "tags", "5")
    findProblem(problems, path, "sources[2] (service: cpu)", "interval", "expected a number")
    findProblem(problems, path, "sources[2] (service: cpu)", "watchdog", "true or false")
    output = f"outputs[0] (output: {LOGGER_PATH})"
    findProblem(problems, path, output, "maxsize", "expected an integer", "big")
    findProblem(problems, path, output, "overflow", "explode")
    assert len(problems) == 6, problems
    # A bad top-level ttl is reported once, not again in every source it would flow into.
    assert [p for p in problems if p.key == "ttl"] == [problems[0]]


def test_a_value_below_its_minimum_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        sources:
          - service: cpu
            source: {CPU_PATH}
            interval: 0
        """,
    )
    [problem] = problemsOf(path)
    findProblem([problem], path, "sources[0] (service: cpu)", "interval", "at least")


@pytest.mark.parametrize(
    ("key", "value"),
    [("sources", "5"), ("outputs", "5"), ("blueprint", "5"), ("sources", "{cpu: 1}")],
)
def test_top_level_lists_of_the_wrong_type_are_problems_not_crashes(
    tmp_path: Path, key: str, value: str
) -> None:
    path = write(tmp_path / "duct.yml", f"{key}: {value}\n")
    [problem] = problemsOf(path)
    findProblem([problem], path, None, key, "expected a list")


# -- 3. unknown keys -------------------------------------------------------------


def test_unknown_keys_in_sources_outputs_and_top_level_are_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        intervall: 10
        outputs:
          - output: {LOGGER_PATH}
            colour: blue
        sources:
          - service: cpu
            source: {CPU_PATH}
            critcal: {{cpu: "> 0.9"}}
        """,
    )
    problems = problemsOf(path)
    assert len(problems) == 3, problems
    findProblem(problems, path, None, "intervall", "unknown key")
    findProblem(problems, path, f"outputs[0] (output: {LOGGER_PATH})", "colour", "unknown key")
    findProblem(problems, path, "sources[0] (service: cpu)", "critcal", "unknown key")


def test_a_plugin_declaring_no_options_passes_extra_keys_through_with_a_warning(
    tmp_path: Path, legacyModule: str
) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        outputs:
          - output: {legacyModule}.LegacyOutput
            endpoint: http://example.invalid/
        sources:
          - service: old
            source: {legacyModule}.LegacySource
            colour: red
            depth: 3
        """,
    )
    config = load(path)
    [source] = config.sources
    assert source.cls is not None and source.cls.__name__ == "LegacySource"
    assert source.config["colour"] == "red"
    assert source.config["depth"] == 3
    assert source.config["interval"] == 60.0  # the declared base options are still filled
    [output] = config.outputs
    assert output.config["endpoint"] == "http://example.invalid/"
    assert output.config["overflow"] == "block"
    assert len(config.warnings) == 2, config.warnings
    sourceWarning = next(w for w in config.warnings if "LegacySource" in w)
    assert str(path) in sourceWarning
    assert "sources[0] (service: old)" in sourceWarning
    assert "colour, depth" in sourceWarning
    assert "passing through" in sourceWarning
    outputWarning = next(w for w in config.warnings if "LegacyOutput" in w)
    assert "endpoint" in outputWarning
    assert "colour" not in outputWarning


def test_a_plugin_declaring_no_options_still_has_its_base_options_checked(
    tmp_path: Path, legacyModule: str
) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        sources:
          - service: old
            source: {legacyModule}.LegacySource
            interval: fast
            colour: red
        """,
    )
    [problem] = problemsOf(path)
    findProblem([problem], path, "sources[0] (service: old)", "interval", "expected a number")


def test_loading_twice_does_not_repeat_warnings(tmp_path: Path, legacyModule: str) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        sources:
          - service: old
            source: {legacyModule}.LegacySource
            colour: red
        """,
    )
    configFile = ConfigFile(str(path))
    first = configFile.load()
    second = configFile.load()
    assert len(first.warnings) == 1
    assert len(second.warnings) == 1


# -- 4. plugins that do not import or are of the wrong kind ---------------------


@pytest.mark.parametrize(
    ("dotted", "words"),
    [
        ("duct.sources.linux.nosuchmodule.CPU", ("cannot import", "nosuchmodule")),
        ("duct.sources.linux.basic.NoSuchClass", ("cannot import", "has no NoSuchClass")),
        ("CPU", ("not a dotted path",)),
        (NULL_PATH, ("not a subclass of duct.objects.Source",)),
        ("duct.objects.Event", ("not a subclass of duct.objects.Source",)),
    ],
)
def test_a_source_that_does_not_load_names_the_key_source(
    tmp_path: Path, dotted: str, words: tuple[str, ...]
) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        sources:
          - service: ok
            source: {CPU_PATH}
          - service: broken
            source: {dotted}
        """,
    )
    [problem] = problemsOf(path)
    findProblem([problem], path, "sources[1] (service: broken)", "source", dotted, *words)


@pytest.mark.parametrize(
    ("dotted", "words"),
    [
        ("duct.outputs.nosuchmodule.Out", ("cannot import", "nosuchmodule")),
        ("duct.outputs.logger.Nope", ("cannot import", "has no Nope")),
        ("collections.OrderedDict", ("not a subclass of duct.objects.Output",)),
        (CPU_PATH, ("not a subclass of duct.objects.Output",)),
    ],
)
def test_an_output_that_does_not_load_names_the_key_output(
    tmp_path: Path, dotted: str, words: tuple[str, ...]
) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        outputs:
          - output: {dotted}
            name: main
        """,
    )
    [problem] = problemsOf(path)
    findProblem([problem], path, "outputs[0] (name: main)", "output", dotted, *words)


def test_an_entry_without_its_class_path_names_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        """\
        outputs:
          - name: main
        sources:
          - service: cpu
        """,
    )
    problems = problemsOf(path)
    assert len(problems) == 2, problems
    findProblem(problems, path, "outputs[0] (name: main)", "output", "missing")
    findProblem(problems, path, "sources[0] (service: cpu)", "source", "missing")


def test_an_entry_that_is_not_a_mapping_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path / "duct.yml", "sources:\n  - cpu\n")
    [problem] = problemsOf(path)
    assert (problem.file, problem.item) == (str(path), "sources[0]")
    assert "expected a mapping" in problem.message


# -- 5. service ------------------------------------------------------------------


def test_a_source_without_a_service_names_the_key_service(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        sources:
          - service: cpu
            source: {CPU_PATH}
          - source: {MEMORY_PATH}
        """,
    )
    [problem] = problemsOf(path)
    findProblem([problem], path, f"sources[1] (source: {MEMORY_PATH})", "service", "missing")


def test_a_source_without_a_service_or_a_loadable_class_reports_both(tmp_path: Path) -> None:
    path = write(tmp_path / "duct.yml", "sources:\n  - source: duct.nosuch.Thing\n")
    problems = problemsOf(path)
    assert len(problems) == 2, problems
    label = "sources[0] (source: duct.nosuch.Thing)"
    findProblem(problems, path, label, "service", "missing")
    findProblem(problems, path, label, "source", "cannot import")


# -- 6. routes -------------------------------------------------------------------


def test_routes_by_name_and_class_name_as_string_or_list(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        outputs:
          - output: {LOGGER_PATH}
          - output: {NULL_PATH}
            name: blackhole
        sources:
          - service: a
            source: {CPU_PATH}
            route: Logger
          - service: b
            source: {CPU_PATH}
            route: blackhole
          - service: c
            source: {CPU_PATH}
            route: [blackhole, Logger]
          - service: d
            source: {CPU_PATH}
        """,
    )
    config = load(path)
    routes = {item.config["service"]: item.config["route"] for item in config.sources}
    # No route: the outputs configured without a name, as the original duct routes.
    assert routes == {
        "a": ["Logger"],
        "b": ["blackhole"],
        "c": ["blackhole", "Logger"],
        "d": ["Logger"],
    }


@pytest.mark.parametrize("route", ["nowhere", "[Logger, nowhere]", "'Logger, nowhere'"])
def test_a_route_to_no_output_names_the_key_and_the_output(tmp_path: Path, route: str) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        outputs:
          - output: {LOGGER_PATH}
        sources:
          - service: cpu
            source: {CPU_PATH}
            route: {route}
        """,
    )
    [problem] = problemsOf(path)
    findProblem([problem], path, "sources[0] (service: cpu)", "route", "'nowhere'", "Logger")


def test_a_route_when_there_are_no_outputs_says_so(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        sources:
          - service: cpu
            source: {CPU_PATH}
            route: main
        """,
    )
    [problem] = problemsOf(path)
    findProblem([problem], path, "sources[0] (service: cpu)", "route", "'main'", "none")


# -- 7. triggers -----------------------------------------------------------------


def test_malformed_triggers_name_the_keys_critical_and_warning(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        sources:
          - service: cpu
            source: {CPU_PATH}
            critical: {{cpu: "gt 0.8"}}
          - service: memory
            source: {MEMORY_PATH}
            warning: {{"[": "> 1"}}
          - service: load
            source: {LOAD_PATH}
            critical: "> 0.8"
        """,
    )
    problems = problemsOf(path)
    assert len(problems) == 3, problems
    findProblem(problems, path, "sources[0] (service: cpu)", "critical", "gt 0.8")
    findProblem(problems, path, "sources[1] (service: memory)", "warning", "'['", "regex")
    findProblem(problems, path, "sources[2] (service: load)", "critical", "expected a mapping")


def test_valid_triggers_load(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        sources:
          - service: cpu
            source: {CPU_PATH}
            warning: {{cpu: "> 0.8", "cpu\\\\.user$": ">= 0.5"}}
            critical: {{cpu: "> 0.95"}}
        """,
    )
    [source] = load(path).sources
    assert source.config["warning"] == {"cpu": "> 0.8", "cpu\\.user$": ">= 0.5"}
    assert source.config["critical"] == {"cpu": "> 0.95"}


# -- 8. every problem at once -----------------------------------------------------


def test_every_problem_is_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        interval: often
        bogus: 1
        outputs:
          - output: {LOGGER_PATH}
            name: main
            overflow: explode
          - output: duct.outputs.nosuch.Out
        sources:
          - service: cpu
            source: {CPU_PATH}
            interval: fast
            critical: {{cpu: "gt 0.8"}}
            route: nowhere
          - service: memory
            source: duct.nosuch.Memory
          - source: {LOAD_PATH}
            colour: red
        """,
    )
    problems = problemsOf(path)
    file = str(path)
    cpu = "sources[0] (service: cpu)"
    load_ = f"sources[2] (source: {LOAD_PATH})"
    assert where(problems) == Counter(
        [
            (file, None, "interval"),
            (file, None, "bogus"),
            (file, "outputs[0] (name: main)", "overflow"),
            (file, "outputs[1] (output: duct.outputs.nosuch.Out)", "output"),
            (file, cpu, "interval"),
            (file, cpu, "critical"),
            (file, cpu, "route"),
            (file, "sources[1] (service: memory)", "source"),
            (file, load_, "service"),
            (file, load_, "colour"),
        ]
    )


# -- 9. defaults -----------------------------------------------------------------


def test_top_level_interval_and_ttl_flow_into_sources_that_do_not_set_them(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        ttl: 30.0
        interval: 5.0
        outputs:
          - output: {LOGGER_PATH}
        sources:
          - service: cpu
            source: {CPU_PATH}
          - service: load
            source: {LOAD_PATH}
            interval: 10.0
            ttl: 120.0
          - service: memory
            source: {MEMORY_PATH}
            ttl: 0
        """,
    )
    config = load(path)
    assert config["ttl"] == 30.0 and config["interval"] == 5.0
    cpu, load_, memory = (item.config for item in config.sources)
    assert (cpu["interval"], cpu["ttl"]) == (5.0, 30.0)
    assert (load_["interval"], load_["ttl"]) == (10.0, 120.0)
    assert (memory["interval"], memory["ttl"]) == (5.0, 0)
    # Declared defaults are filled in.
    assert cpu["tags"] == [] and cpu["route"] == ["Logger"] and cpu["watchdog"] is False
    [output] = config.outputs
    assert output.cls is Logger
    assert output.config["overflow"] == "block"
    assert output.config["maxsize"] == 100_000
    assert output.config["name"] is None


def test_without_top_level_values_the_global_defaults_apply(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        sources:
          - service: cpu
            source: {CPU_PATH}
        """,
    )
    config = load(path)
    assert config["ttl"] == 60.0 and config["interval"] == 60.0 and config["stagger"] == 0.2
    assert config.get("hostname") is None
    [cpu] = config.sources
    assert (cpu.config["interval"], cpu.config["ttl"]) == (60.0, 60.0)
    assert cpu.cls is CPU
    assert (cpu.file, cpu.label) == (str(path), "sources[0] (service: cpu)")


def test_default_lists_are_not_shared_between_sources(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        sources:
          - service: a
            source: {CPU_PATH}
          - service: b
            source: {CPU_PATH}
        """,
    )
    a, b = load(path).sources
    a.config["tags"].append("mutated")
    assert b.config["tags"] == []


def test_from_dict_validates_the_same_way() -> None:
    config = ConfigFile.fromDict(
        {"interval": 2.0, "sources": [{"service": "cpu", "source": CPU_PATH}]}
    )
    assert config.sources[0].config["interval"] == 2.0
    with pytest.raises(ConfigurationError) as info:
        ConfigFile.fromDict({"sources": [{"service": "cpu", "source": CPU_PATH, "x": 1}]}, "mem")
    [problem] = info.value.problems
    assert (problem.file, problem.item, problem.key) == ("mem", "sources[0] (service: cpu)", "x")


# -- 10. include and include_path ------------------------------------------------


def test_include_a_single_file_extends_lists(tmp_path: Path) -> None:
    write(
        tmp_path / "extra.yml",
        f"""\
        outputs:
          - output: {NULL_PATH}
        sources:
          - service: memory
            source: {MEMORY_PATH}
        """,
    )
    path = write(
        tmp_path / "duct.yml",
        f"""\
        include: extra.yml
        outputs:
          - output: {LOGGER_PATH}
        sources:
          - service: cpu
            source: {CPU_PATH}
        """,
    )
    config = load(path)
    assert [item.config["service"] for item in config.sources] == ["cpu", "memory"]
    assert [item.cls for item in config.outputs] == [Logger, Null]
    assert config.sources[1].file == str(tmp_path / "extra.yml")


def test_include_path_directory_loads_yml_and_yaml_in_sorted_order(tmp_path: Path) -> None:
    confd = tmp_path / "conf.d"
    for name, service in [("20-b.yml", "b"), ("10-a.yaml", "a"), ("30-c.yml", "c")]:
        write(
            confd / name,
            f"""\
            sources:
              - service: {service}
                source: {CPU_PATH}
            """,
        )
    # Files of any other name are ignored, even when they are not YAML at all.
    write(confd / "00-notes.txt", "sources: [this is : not { yaml\n")
    write(confd / "README", "ignored\n")
    write(confd / "40-d.yml.disabled", "sources:\n  - service: d\n")
    path = write(
        tmp_path / "duct.yml",
        f"""\
        include_path: conf.d
        sources:
          - service: main
            source: {CPU_PATH}
        """,
    )
    config = load(path)
    assert [item.config["service"] for item in config.sources] == ["main", "a", "b", "c"]
    assert [item.file for item in config.sources[1:]] == [
        str(confd / "10-a.yaml"),
        str(confd / "20-b.yml"),
        str(confd / "30-c.yml"),
    ]


def test_included_mappings_merge(tmp_path: Path) -> None:
    write(
        tmp_path / "boxes.yml",
        f"""\
        toolbox:
          memory_box:
            sources:
              - service: memory
                source: {MEMORY_PATH}
        """,
    )
    path = write(
        tmp_path / "duct.yml",
        f"""\
        include: [boxes.yml]
        toolbox:
          cpu_box:
            sources:
              - service: cpu
                source: {CPU_PATH}
        blueprint:
          - toolbox: [cpu_box, memory_box]
        """,
    )
    config = load(path)
    assert set(config["toolbox"]) == {"cpu_box", "memory_box"}
    assert [item.config["service"] for item in config.sources] == ["cpu", "memory"]


def test_a_relative_include_is_relative_to_the_including_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc" / "duct"
    write(
        etc / "conf.d" / "cpu.yml",
        f"""\
        include: ../more/memory.yml
        sources:
          - service: cpu
            source: {CPU_PATH}
        """,
    )
    write(
        etc / "more" / "memory.yml",
        f"""\
        sources:
          - service: memory
            source: {MEMORY_PATH}
        """,
    )
    path = write(etc / "duct.yml", "include: conf.d\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load(path)
    assert [(item.config["service"], item.file) for item in config.sources] == [
        ("cpu", str(etc / "conf.d" / "cpu.yml")),
        ("memory", str(etc / "more" / "memory.yml")),
    ]


@pytest.mark.parametrize("key", ["include", "include_path"])
def test_a_missing_include_target_is_a_warning_naming_the_key(tmp_path: Path, key: str) -> None:
    # The original duct logs a missing include_path and goes on; so does duct.
    path = write(tmp_path / "duct.yml", f"{key}: [missing.d, missing.yml]\n")
    config = load(path)
    assert len(config.warnings) == 2, config.warnings
    assert all(w.startswith(f"{path}: {key}: ") for w in config.warnings)
    assert "missing.d does not exist" in config.warnings[0]
    assert "missing.yml does not exist" in config.warnings[1]


def test_problems_in_included_files_name_that_file(tmp_path: Path) -> None:
    included = write(
        tmp_path / "conf.d" / "web.yml",
        f"""\
        sources:
          - service: ok
            source: {CPU_PATH}
          - service: cpu
            source: {CPU_PATH}
            interval: fast
        """,
    )
    broken = write(tmp_path / "conf.d" / "zz-broken.yml", "sources: [\n")
    path = write(
        tmp_path / "duct.yml",
        f"""\
        include: conf.d
        sources:
          - service: main
            source: {CPU_PATH}
            colour: red
        """,
    )
    problems = problemsOf(path)
    assert len(problems) == 3, problems
    findProblem(problems, path, "sources[0] (service: main)", "colour", "unknown key")
    findProblem(problems, included, "sources[1] (service: cpu)", "interval", "expected a number")
    [syntax] = [p for p in problems if p.file == str(broken)]
    assert "YAML syntax error" in syntax.message and "line 2" in syntax.message


def test_include_cycles_load_each_file_once(tmp_path: Path) -> None:
    write(
        tmp_path / "b.yml",
        f"""\
        include: duct.yml
        sources:
          - service: b
            source: {CPU_PATH}
        """,
    )
    path = write(
        tmp_path / "duct.yml",
        f"""\
        include: b.yml
        sources:
          - service: a
            source: {CPU_PATH}
        """,
    )
    assert [item.config["service"] for item in load(path).sources] == ["a", "b"]


# -- 11. toolbox and blueprint -----------------------------------------------------


def test_duct_toolbox_and_blueprint_form_expands_per_source_and_host(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        interval: 60.0
        ttl: 90.0
        toolbox:
          - name: linux_defaults
          - defaults:
              interval: 5.0
              tags: [linux]
          - sources:
              - service: load
                source: {LOAD_PATH}
              - service: cpu
                source: {CPU_PATH}
                tags: [cpu]
        blueprint:
          - toolbox: linux_defaults
            defaults:
              interval: 10.0
            sets:
              - hostname: [a, b, c]
        """,
    )
    config = load(path)
    assert len(config.sources) == 6
    pairs = sorted((item.config["service"], item.config["hostname"]) for item in config.sources)
    assert pairs == sorted((s, h) for s in ("load", "cpu") for h in ("a", "b", "c"))
    for item in config.sources:
        assert item.config["interval"] == 10.0  # the blueprint's defaults beat the toolbox's
        assert item.config["ttl"] == 90.0  # the top level fills what neither sets
        expected = ["cpu"] if item.config["service"] == "cpu" else ["linux"]
        assert item.config["tags"] == expected  # the source's own value beats both
        assert item.cls is (CPU if item.config["service"] == "cpu" else LoadAverage)
        assert item.file == str(path)
        assert item.label.startswith("blueprint[0] (linux_defaults #")


def test_toolbox_mapping_form_and_sets_that_zip(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        toolbox:
          web:
            defaults:
              interval: 30.0
            sources:
              - service: memory
                source: {MEMORY_PATH}
        blueprint:
          - toolbox: web
            sets:
              - hostname: [web1, web2]
                tags: [[eu], [us]]
        """,
    )
    config = load(path)
    assert [
        (i.config["hostname"], i.config["tags"], i.config["interval"]) for i in config.sources
    ] == [("web1", ["eu"], 30.0), ("web2", ["us"], 30.0)]
    assert all(item.cls is Memory for item in config.sources)


def test_a_blueprint_set_whose_lists_differ_in_length_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        toolbox:
          web:
            sources:
              - service: cpu
                source: {CPU_PATH}
        blueprint:
          - toolbox: web
            sets:
              - hostname: [a, b, c]
                tags: [[x], [y]]
        """,
    )
    [problem] = problemsOf(path)
    findProblem([problem], path, "blueprint[0]", "sets[0]", "differ in length")


def test_a_blueprint_naming_an_unknown_toolbox_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        toolbox:
          - name: linux_defaults
          - sources:
              - service: cpu
                source: {CPU_PATH}
        blueprint:
          - toolbox: linux_defaults
          - toolbox: windows_defaults
        """,
    )
    [problem] = problemsOf(path)
    findProblem([problem], path, "blueprint[1]", "toolbox", "windows_defaults")


def test_problems_in_blueprint_sources_name_the_blueprint(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        toolbox:
          web:
            sources:
              - service: cpu
                source: {CPU_PATH}
                interval: fast
        blueprint:
          - toolbox: web
            sets:
              - hostname: [a]
        """,
    )
    [problem] = problemsOf(path)
    findProblem([problem], path, "blueprint[0] (web #0, service: cpu)", "interval", "number")


@pytest.mark.parametrize(
    ("text", "item", "key"),
    [
        ("toolbox: {web: 5}\nblueprint: [{toolbox: web}]\n", "toolbox (web)", None),
        ("toolbox: {web: {sources: 5}}\nblueprint: [{toolbox: web}]\n", "toolbox (web)", "sources"),
        ("toolbox: [{name: web}, {defaults: [1]}]\n", "toolbox (web)", "defaults"),
        (
            "toolbox: {web: {}}\nblueprint: [{toolbox: web, defaults: 5}]\n",
            "blueprint[0]",
            "defaults",
        ),
        ("toolbox: {web: {}}\nblueprint: [{toolbox: 5}]\n", "blueprint[0]", "toolbox"),
        ("toolbox: {web: {}}\nblueprint: [{toolbox: web, set: []}]\n", "blueprint[0]", "set"),
        ("blueprint: [cpu]\n", "blueprint[0]", None),
        ("toolbox: {web: {}}\nblueprint: [{toolbox: []}]\n", "blueprint[0]", "toolbox"),
    ],
)
def test_malformed_toolboxes_and_blueprints_are_problems_not_crashes(
    tmp_path: Path, text: str, item: str, key: str | None
) -> None:
    path = write(tmp_path / "duct.yml", text)
    problems = problemsOf(path)
    assert {(p.file, p.item, p.key) for p in problems} == {(str(path), item, key)}


# -- 12. compatibility with the original duct ------------------------------------


@pytest.mark.parametrize(
    ("proto", "cls"),
    [("", "RiemannTCP"), ("proto: tcp", "RiemannTCP"), ("proto: udp", "RiemannUDP")],
)
def test_old_style_riemann_server_creates_the_default_output(
    tmp_path: Path, proto: str, cls: str
) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        server: riemann.example
        port: 5556
        {proto}
        sources:
          - service: cpu
            source: {CPU_PATH}
        """,
    )
    config = ConfigFile(str(path)).load()
    [output] = config.outputs
    assert output.cls is not None and output.cls.__name__ == cls
    server = output.config["server"]
    assert server in ("riemann.example", ["riemann.example"])
    assert output.config["port"] == 5556


def test_the_getting_started_config_loads_unchanged(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        interval: 1.0
        ttl: 60.0

        outputs:
          - output: duct.outputs.riemann.RiemannTCP
            server: localhost
            port: 5555

        sources:
          - service: cpu
            source: {CPU_PATH}
            interval: 1.0
            warning:  {{ cpu: "> 0.5" }}
            critical: {{ cpu: "> 0.8" }}
          - service: memory
            source: duct.sources.linux.basic.Memory
            interval: 10.0
          - service: load
            source: duct.sources.linux.basic.LoadAverage
            interval: 10.0
        """,
    )
    config = ConfigFile(str(path)).load()
    assert [o.cls.__name__ for o in config.outputs if o.cls] == ["RiemannTCP"]
    assert [s.config["service"] for s in config.sources] == ["cpu", "memory", "load"]


def test_the_original_duct_packaged_config_loads_unchanged(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        """\
        ttl: 60.0
        interval: 1.0
        outputs:
            - output: duct.outputs.logger.Logger
        sources:
            - service: load
              source: duct.sources.linux.basic.LoadAverage
              interval: 10.0
            - service: cpu
              source: duct.sources.linux.basic.CPU
              interval: 10.0
              critical: {
                cpu: "> 0.8"
              }
            - service: memory
              source: duct.sources.linux.basic.Memory
              interval: 10.0
        """,
    )
    config = load(path)
    assert config.warnings == []
    assert [(i.config["service"], i.cls) for i in config.sources] == [
        ("load", LoadAverage),
        ("cpu", CPU),
        ("memory", Memory),
    ]
    assert all(i.config["interval"] == 10.0 and i.config["ttl"] == 60.0 for i in config.sources)
    assert config.sources[1].config["critical"] == {"cpu": "> 0.8"}
    [output] = config.outputs
    assert output.cls is Logger
    assert output.config["output"] == LOGGER_PATH


# -- 13. YAML safety -------------------------------------------------------------


@pytest.mark.parametrize(
    "tagged",
    [
        '!!python/object/apply:os.system ["touch {marker}"]',
        '!!python/object/apply:subprocess.call [["touch", "{marker}"]]',
        "!!python/name:os.system",
    ],
)
def test_python_tags_are_refused_and_never_executed(tmp_path: Path, tagged: str) -> None:
    marker = tmp_path / "executed"
    path = write(tmp_path / "duct.yml", f"ttl: {tagged.format(marker=marker)}\n")
    [problem] = problemsOf(path)
    assert problem.file == str(path)
    assert "python/" in problem.message
    assert not marker.exists()


# -- 14. empty files -------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_an_empty_file_is_a_config_with_nothing_in_it(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "duct.yml", text)
    config = load(path)
    assert config.sources == [] and config.outputs == [] and config.warnings == []
    assert config["ttl"] == 60.0


# -- 15. output names ------------------------------------------------------------


def test_duplicate_output_names_are_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        outputs:
          - output: {LOGGER_PATH}
            name: main
          - output: {NULL_PATH}
            name: main
          - output: {LOGGER_PATH}
          - output: {LOGGER_PATH}
        """,
    )
    problems = problemsOf(path)
    assert len(problems) == 1, problems
    findProblem(problems, path, "outputs[1] (name: main)", "name", "'main'")


def test_outputs_without_a_name_are_numbered_and_take_unrouted_sources(tmp_path: Path) -> None:
    # The original allows several outputs without a name; unrouted sources go to each.
    path = write(
        tmp_path / "duct.yml",
        f"""\
        outputs:
          - output: {LOGGER_PATH}
          - output: {LOGGER_PATH}
          - output: {NULL_PATH}
            name: blackhole
        sources:
          - service: cpu
            source: {CPU_PATH}
        """,
    )
    config = load(path)
    assert [item.config["name"] for item in config.outputs] == [None, "Logger-2", "blackhole"]
    assert config.sources[0].config["route"] == ["Logger", "Logger-2"]


def test_duplicate_output_names_across_included_files(tmp_path: Path) -> None:
    included = write(
        tmp_path / "more.yml",
        f"""\
        outputs:
          - output: {NULL_PATH}
            name: main
        """,
    )
    path = write(
        tmp_path / "duct.yml",
        f"""\
        include: more.yml
        outputs:
          - output: {LOGGER_PATH}
            name: main
        """,
    )
    [problem] = problemsOf(path)
    findProblem([problem], included, "outputs[0] (name: main)", "name", "'main'")


@pytest.mark.parametrize("path", ["..x", ".duct.objects.Source", "duct.objects."])
def test_malformed_dotted_path_is_an_error_not_a_crash(tmp_path: Path, path: str) -> None:
    config = tmp_path / "duct.yml"
    config.write_text(f"sources:\n  - service: x\n    source: '{path}'\n")
    with pytest.raises(ConfigurationError) as raised:
        ConfigFile(str(config)).load()
    [problem] = raised.value.problems
    assert (problem.key, problem.item) == ("source", "sources[0] (service: x)")
    assert "dotted path" in problem.message


def test_plugin_module_that_fails_on_import_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "brokenplugin.py").write_text("raise RuntimeError('half-installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "duct.yml"
    config.write_text("sources:\n  - service: x\n    source: brokenplugin.Thing\n")
    with pytest.raises(ConfigurationError) as raised:
        ConfigFile(str(config)).load()
    [problem] = raised.value.problems
    assert problem.key == "source"
    assert "RuntimeError: half-installed" in problem.message


def test_wrong_type_for_required_key_is_reported_once(tmp_path: Path) -> None:
    config = tmp_path / "duct.yml"
    config.write_text("sources:\n  - service: 5\n    source: duct.sources.linux.basic.CPU\n")
    with pytest.raises(ConfigurationError) as raised:
        ConfigFile(str(config)).load()
    assert [(p.key, p.message) for p in raised.value.problems] == [
        ("service", "expected a string, got 5")
    ]


@pytest.mark.parametrize(
    ("buffer", "words"),
    [
        ("{type: tape}", "buffer.type: expected memory or disk"),
        ("{type: disk, sync: sometimes}", "buffer.sync: expected always or interval or never"),
        ("{type: disk, colour: red}", "buffer.colour"),
        ("{path: /tmp/x}", "buffer.path: expected no value: it is for type disk"),
    ],
)
def test_bad_buffer_settings_are_reported_before_start(
    tmp_path: Path, buffer: str, words: str
) -> None:
    path = write(
        tmp_path / "duct.yml",
        f"""\
        outputs:
          - output: duct.outputs.null.Null
            buffer: {buffer}
        """,
    )
    [problem] = problemsOf(path)
    assert (problem.item, problem.key) == ("outputs[0] (output: duct.outputs.null.Null)", "buffer")
    assert words in problem.message
