"""The command line on good and bad inputs.

`detente.cli.main` turns every user error into one message on stderr and exit status 2. The
shipped data and a few bad inputs run as a real process (`python -m detente`), which sees exactly
what a user sees; the many bad-input cases call `detente.cli.main` in-process with a patched
`sys.argv` (a process start costs seconds), which exercises the same error handling: an
exception that escaped `main` would fail the test with its traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from detente.analysis import analyze
from detente.loading import load_scenario
from helpers import Cli, invoke
from helpers import CliResult as Result

ROOT = Path(__file__).parents[1]
TINY = Path(__file__).parent / "data" / "tiny"
BASELINE = ROOT / "scenarios" / "baseline.yaml"


def run(*args: str | Path) -> Result:
    """`python -m detente ARGS` in a fresh process."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "detente", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def assert_one_error(result: Result, file: Path, *expected: str) -> str:
    """Exit 2, nothing on stdout, no traceback, and one error line naming `file` and `expected`."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"error: {file}: "), line
    for fragment in expected:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A writable copy of tests/data/tiny; returns its scenario file."""
    shutil.copytree(TINY, tmp_path / "tiny")
    return tmp_path / "tiny" / "scenario.yaml"


def mutate(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


# --------------------------------------------------------------------------- good inputs


def test_validate_accepts_the_shipped_scenarios_and_briefs() -> None:
    result = invoke("validate", "scenarios/", "agents/", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    checked = [line for line in result.stdout.splitlines() if line.startswith("✓ ")]
    # Folders are searched recursively: the variants in scenarios/variants and the benchmark's
    # briefs in agents/benchmarks are checked too.
    expected = len(list((ROOT / "scenarios").rglob("*.yaml"))) + len(
        list((ROOT / "agents").rglob("*.yaml"))
    )
    assert len(checked) == expected
    assert any("scenario 'baseline'" in line for line in checked)
    assert any("scenario 'leadership_transition'" in line for line in checked)


def test_installed_console_script_runs() -> None:
    script = Path(sys.executable).parent / "detente"
    if not script.exists():
        pytest.skip("the detente script is not installed next to this interpreter")
    result = subprocess.run(
        [str(script), "validate", str(TINY / "scenario.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "scenario 'tiny'" in result.stdout


@pytest.fixture(scope="module")
def baseline_json() -> dict[str, Any]:
    result = invoke("analyze", BASELINE, "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_analyze_reports_a_zopa_and_the_nash_package(baseline_json: dict[str, Any]) -> None:
    result = run("analyze", BASELINE)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    zopa = re.search(r"ZOPA \(the rule passes it with rational votes\)\W+([\d,]+) \(", out)
    assert zopa is not None, out
    assert int(zopa.group(1).replace(",", "")) > 0
    assert "Nash bargaining package" in out
    assert "The ZOPA is empty" not in out
    # The text and the JSON report give the same figures.
    assert int(zopa.group(1).replace(",", "")) == baseline_json["zopa"]
    assert f"{baseline_json['packages']:,}" in out
    nash = baseline_json["nash"]
    assert f"Nash product {nash['nash_product']:,.1f}" in out
    for option in nash["package"]["options"].values():
        assert f"({option})" in out


def test_analyze_json_matches_the_library(baseline_json: dict[str, Any]) -> None:
    expected = analyze(load_scenario(BASELINE)).model_dump(mode="json")
    assert baseline_json == expected
    assert baseline_json["zopa"] > 0
    assert baseline_json["nash"] is not None
    assert baseline_json["counts"]["required"] == baseline_json["zopa"]


def test_analyze_json_of_tiny_gives_the_hand_computed_figures(cli: Cli) -> None:
    result = cli("analyze", TINY / "scenario.yaml", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["packages"], data["admissible"], data["zopa"]) == (18, 8, 4)
    assert data["pareto_frontier"] == 4
    assert data["nash"]["package"] == {"options": {"x": "x1", "y": "y2"}, "terms": {"t": 5.0}}


# --------------------------------------------------------------------------- bad scenario fields


def _set(*keys: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        node: Any = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


def _delete(*keys: str | int) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        node: Any = data
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return change


def _all(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        for one in changes:
            one(data)

    return change


BAD_FIELDS = [
    pytest.param(
        _set("preferences", "a", "utilities", "z", value={"z1": 10}),
        "preferences.a.utilities.z",
        ["unknown issue 'z'", "expected one of: x, y"],
        id="unknown-issue-in-utilities",
    ),
    pytest.param(
        _set("preferences", "a", "utilities", "x", "x9", value=30),
        "preferences.a.utilities.x.x9",
        ["unknown option 'x9' of issue 'x'", "expected one of: x1, x2, x3"],
        id="unknown-option-in-utilities",
    ),
    pytest.param(
        _set("preferences", "a", "red_lines", 0, "options", value=["x4"]),
        "preferences.a.red_lines[0].options[0]",
        ["unknown option 'x4' of issue 'x'", "expected one of: x1, x2, x3"],
        id="unknown-option-in-forbid-red-line",
    ),
    pytest.param(
        _set("preferences", "c", "red_lines", 0, "then", "options", value=["y3"]),
        "preferences.c.red_lines[0].then.options[0]",
        ["unknown option 'y3' of issue 'y'", "expected one of: y1, y2"],
        id="unknown-option-in-conditional-red-line",
    ),
    pytest.param(
        _set("preferences", "b", "red_lines", 0, "term", value="tt"),
        "preferences.b.red_lines[0].term",
        ["unknown term 'tt'", "expected one of: t"],
        id="unknown-term-in-bound-red-line",
    ),
    pytest.param(
        _delete("preferences", "a", "utilities", "x", "x2"),
        "preferences.a.utilities.x",
        ["missing utility for option 'x2'"],
        id="missing-utility",
    ),
    pytest.param(
        _all(  # drop t's weight 0.2 and give it to x, so the weights still sum to 1
            _delete("preferences", "b", "weights", "t"),
            _set("preferences", "b", "weights", "x", value=0.7),
        ),
        "preferences.b.weights",
        ["missing weight for 't'", "every issue and numeric term"],
        id="missing-weight",
    ),
    pytest.param(
        _set("preferences", "a", "weights", "x", value=0.6),
        "preferences.a.weights",
        ["expected weights summing to 1, got 1.1"],
        id="weights-not-summing-to-one",
    ),
    pytest.param(
        _set("preferences", "c", "reservation_utility", value=120),
        "preferences.c.reservation_utility",
        ["expected a utility from 0 to 100, got 120"],
        id="reservation-above-100",
    ),
    pytest.param(
        _set("preferences", "a", "reservation_utility", value=-5),
        "preferences.a.reservation_utility",
        ["expected a utility from 0 to 100, got -5"],
        id="reservation-below-0",
    ),
    pytest.param(
        _set("terms", 0, "step", value=3),
        "terms[0].step",
        ["expected a step that divides max - min (10), got 3"],
        id="step-not-dividing-range",
    ),
    pytest.param(
        _set("decision", "required", value=["a", "b", "zed"]),
        "decision.required[2]",
        ["unknown voting party 'zed'", "expected one of: a, b, c"],
        id="unknown-required-party",
    ),
    pytest.param(
        _set("decision", "veto", value=["q"]),
        "decision.veto[0]",
        ["unknown voting party 'q'", "expected one of: a, b, c"],
        id="unknown-veto-party",
    ),
    pytest.param(
        _set("decision", "quorum", value={"min": 2, "including": ["m"]}),
        "decision.quorum.including[0]",
        ["unknown voting party 'm'", "expected one of: a, b, c"],
        id="mediator-in-quorum",
    ),
    pytest.param(
        _set("preferences", "a", "red_lines", 0, "kind", value="never"),
        "preferences.a.red_lines[0].kind",
        ["expected one of 'forbid', 'bound', 'conditional', got 'never'"],
        id="unknown-red-line-kind",
    ),
    pytest.param(
        _set("preferences", "a", "red_lines", 0, "id", value="No X3"),
        "preferences.a.red_lines[0].id",
        ["expected a lower snake case id", 'got "No X3"'],
        id="id-not-snake-case",
    ),
    pytest.param(
        _set("preferences", "c", "red_lines", 0, "if", "term", value="t"),
        "preferences.c.red_lines[0].if",
        ["a condition names exactly one of `issue` or `term`"],
        id="condition-with-issue-and-term",
    ),
    pytest.param(
        _delete("title"),
        "title",
        ["required field is missing"],
        id="missing-field",
    ),
    pytest.param(
        _set("decision", "max_rounds", value="many"),
        "decision.max_rounds",
        ["valid integer", 'got "many"'],
        id="wrong-type",
    ),
]


@pytest.mark.parametrize(("change", "field", "expected"), BAD_FIELDS)
def test_bad_scenario_field_gets_one_clear_error(
    cli: Cli, tiny: Path, change: Callable[[dict[str, Any]], None], field: str, expected: list[str]
) -> None:
    mutate(tiny, change)
    line = assert_one_error(cli("analyze", tiny), tiny, f"{field}: ", *expected)
    assert line.startswith(f"error: {tiny}: {field}: ")
    assert "Value error" not in line


# --------------------------------------------------------------------------- bad files


def test_malformed_yaml_names_the_line(cli: Cli, tiny: Path) -> None:
    tiny.write_text("id: tiny\nparties: [a, b\nissues: []\n", encoding="utf-8")
    line = assert_one_error(cli("analyze", tiny), tiny, "malformed YAML")
    assert re.search(r": line \d+, column \d+: ", line), line


def test_empty_file_is_refused(cli: Cli, tiny: Path) -> None:
    tiny.write_text("", encoding="utf-8")
    assert_one_error(
        cli("analyze", tiny), tiny, "expected a YAML mapping at the top, got an empty file"
    )


def test_top_level_list_is_refused(cli: Cli, tiny: Path) -> None:
    tiny.write_text("- a\n- b\n", encoding="utf-8")
    assert_one_error(cli("analyze", tiny), tiny, "expected a YAML mapping at the top, got list")


def test_missing_file_is_refused(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert_one_error(cli("analyze", missing), missing, "no such file")


def test_party_without_a_brief(cli: Cli, tiny: Path) -> None:
    brief = tiny.parent / "agents" / "c.yaml"
    brief.unlink()
    assert_one_error(
        cli("analyze", tiny), tiny, "parties[2]: ", "party 'c' has no brief", str(brief)
    )


def test_brief_whose_role_contradicts_the_scenario(cli: Cli, tiny: Path) -> None:
    brief = tiny.parent / "agents" / "m.yaml"
    mutate(brief, _set("role", value="party"))
    assert_one_error(
        cli("analyze", tiny), tiny, "parties[3]: ", str(brief), "role 'mediator'", "got 'party'"
    )


def test_voting_party_whose_brief_says_mediator(cli: Cli, tiny: Path) -> None:
    mutate(tiny.parent / "agents" / "a.yaml", _set("role", value="mediator"))
    assert_one_error(cli("analyze", tiny), tiny, "parties[0]: ", "role 'party'", "got 'mediator'")


def test_invalid_brief_is_reported_against_the_brief_file(cli: Cli, tiny: Path) -> None:
    brief = tiny.parent / "agents" / "b.yaml"
    mutate(brief, _set("role", value="observer"))
    assert_one_error(cli("analyze", tiny), brief, "role: ", "'party'", "'mediator'", '"observer"')


def test_brief_id_must_match_its_file_name(cli: Cli, tiny: Path) -> None:
    brief = tiny.parent / "agents" / "b.yaml"
    mutate(brief, _set("id", value="bee"))
    assert_one_error(cli("analyze", tiny), brief, "id: ", "expected 'b'", "got 'bee'")


# --------------------------------------------------------------------------- validate on bad inputs


def test_validate_reports_each_bad_file_and_exits_2(cli: Cli, tiny: Path) -> None:
    mutate(tiny, _set("terms", 0, "step", value=3))
    agents = tiny.parent / "agents"
    result = cli("validate", tiny, agents)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"✗ {tiny}: terms[0].step: expected a step that divides" in result.stderr
    assert "1 of 5 files invalid" in result.stderr
    assert result.stdout.count("✓ ") == 4  # the four briefs are fine


def test_validate_of_a_missing_path(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = cli("validate", missing)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"✗ {missing}: no such file" in result.stderr


def test_validate_of_a_folder_without_yaml(cli: Cli, tmp_path: Path) -> None:
    assert_one_error(cli("validate", tmp_path), tmp_path, "no .yaml files in this folder")


# --------------------------------------------------------------------------- as a real process


def test_bad_inputs_in_a_real_process(tiny: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert_one_error(run("analyze", missing), missing, "no such file")
    mutate(tiny, _set("preferences", "a", "utilities", "x", "x9", value=30))
    assert_one_error(
        run("analyze", tiny),
        tiny,
        "preferences.a.utilities.x.x9: ",
        "unknown option 'x9' of issue 'x'",
        "expected one of: x1, x2, x3",
    )
    tiny.write_text("id: tiny\nparties: [a, b\n", encoding="utf-8")
    result = run("validate", tiny)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"✗ {tiny}: line " in result.stderr
    assert "malformed YAML" in result.stderr
