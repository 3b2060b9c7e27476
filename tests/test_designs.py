"""Factorial sweep designs (issue 14, parts 1 and 2): the shipped design file, scenario x the
Russia seat (two scripted strategies and an LLM on the fake server) x temperature x 3 seeds, run
end to end in this process; `compare --by agent:russia` and `--by temperature` on it (intervals,
Holm-corrected tests, copies counted once); designs from flags and from small files on the tiny
scenario; and every kind of bad design as one clear message.

The fake Russia's answers depend on the request's seed and temperature (as a model's would), so
its runs are distinct samples and its temperature changes its votes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from detente.comparison import holm
from helpers import ROOT, TINY, CliResult, Req, SchemaResponder, invoke, load, serve

DESIGN = ROOT / "scenarios" / "designs" / "russia_seat.yaml"
BASELINE = ROOT / "scenarios" / "baseline.yaml"
MODEL = "fake-model"
PLAYERS = ["scripted:boulware", "scripted:conceder", MODEL]


class Moody(SchemaResponder):
    """Russia on the fake server: accepts a package with a chance set by its temperature (0:
    mostly, 1: seldom), drawn from the seed and round; what it says names its seed."""

    def vote(self, req: Req) -> str:
        seed, temperature = req.body.get("seed"), float(req.body.get("temperature") or 0)
        roll = hashlib.sha256(f"{seed}/{temperature}/{req.round}".encode()).digest()[0] / 255
        return "accept" if roll > (0.2 if temperature < 0.5 else 0.8) else "reject"

    def text(self, req: Req, path: tuple[str, ...]) -> str:
        return f"{path[-1]} of {req.party} in round {req.round} (seed {req.body.get('seed')})"


class Swept:
    def __init__(self, path: Path, first: CliResult, again: CliResult, prices: Path,
                 requests: list[dict[str, Any]]) -> None:
        self.path, self.first, self.again, self.prices = path, first, again, prices
        self.requests = requests


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Swept:
    out = tmp_path_factory.mktemp("designs")
    prices = out / "prices.toml"
    prices.write_text(f'date = "2026-01"\n[models]\n"{MODEL}" = {{ input = 1.0, output = 2.0 }}\n',
                      encoding="utf-8")
    args = [DESIGN, "--model", MODEL, "--out", out, "--concurrency", "4", "--prices", prices]
    with serve(Moody(load(BASELINE))) as server:
        first = invoke("sweep", *args, "--base-url", server.base_url, cwd=ROOT)
        again = invoke("sweep", *args, "--base-url", server.base_url, cwd=ROOT)
        requests = list(server.requests)
    return Swept(out / "russia-seat", first, again, prices, requests)


def _json(result: CliResult) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _results(sweep: Path) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """Every run's levels (from the manifest) and result."""
    manifest = json.loads((sweep / "sweep.json").read_text())
    return [(e["factors"], json.loads((sweep / e["run_dir"] / "result.json").read_text()))
            for e in manifest["entries"]]


# --------------------------------------------------------------------------- the shipped design


def test_the_shipped_design_runs_every_cell_and_records_its_levels(swept: Swept) -> None:
    assert swept.first.returncode == 0, swept.first.stderr + swept.first.stdout
    assert "36 runs (12 cells of 2 scenario x 3 agent:russia x 2 temperature x 3 seeds)" in \
        " ".join(swept.first.stdout.split())
    manifest = json.loads((swept.path / "sweep.json").read_text())
    assert manifest["factors"] == {"scenario": ["baseline", "russia_full_lifting"],
                                   "agent:russia": PLAYERS, "temperature": ["0", "1"]}
    assert manifest["design_file"] == "design.yaml"
    assert (swept.path / "design.yaml").read_text() == DESIGN.read_text()
    entries = manifest["entries"]
    assert len(entries) == 36 and all(e["status"] == "complete" for e in entries)
    cells = {(e["factors"]["scenario"], e["factors"]["agent:russia"],
              e["factors"]["temperature"], e["seed"]) for e in entries}
    assert len(cells) == 36
    for e in entries:  # the header records the same levels, and who played is what they say
        header = json.loads((swept.path / e["run_dir"] / "events.jsonl").read_text()
                            .splitlines()[0])
        assert header["factors"] == e["factors"]
        russia = header["agents"]["russia"]
        if e["factors"]["agent:russia"] == MODEL:
            assert russia["model"] == MODEL
            assert russia["temperature"] == float(e["factors"]["temperature"])
        else:
            assert f"scripted:{russia['strategy']}" == e["factors"]["agent:russia"]
        assert header["agents"]["un_mediator"]["strategy"] == "oracle"
        assert header["max_rounds"] == 6
    # The model was asked at both temperatures with every seed, by the Russia seat alone.
    assert {(r["temperature"], r["seed"]) for r in swept.requests} == {
        (t, s) for t in (0.0, 1.0) for s in (0, 1, 2)}
    assert all(r["messages"][0]["content"].startswith("You are Russia") for r in swept.requests)


def test_running_the_design_again_runs_nothing(swept: Swept) -> None:
    assert swept.again.returncode == 0, swept.again.stderr
    assert "36 already complete" in " ".join(swept.again.stdout.split())
    assert "every seat scripted" in " ".join(swept.first.stdout.split())


def test_compare_by_the_russia_seat_pools_the_rest_and_corrects_with_holm(swept: Swept) -> None:
    data = _json(invoke("compare", swept.path, "--by", "agent:russia", "--json", cwd=ROOT))
    assert data["factors"] == ["agent:russia"] and data["correction"] == "holm"
    assert data["pooled_over"][:1] == ["scenario"] and "temperature" in data["pooled_over"]
    groups = {g["variant"]: g for g in data["groups"]}
    assert set(groups) == set(PLAYERS) and data["reference"] == MODEL
    # A scripted Russia ignores seed and temperature: 12 runs, one per scenario distinct.
    for player in PLAYERS[:2]:
        assert (groups[player]["runs"], groups[player]["n"]) == (12, 2)
    assert (groups[MODEL]["runs"], groups[MODEL]["n"]) == (12, 12)
    results = _results(swept.path)
    llm_deals = sum(r["status"] == "deal" for f, r in results if f["agent:russia"] == MODEL)
    rate = groups[MODEL]["deal_rate"]
    assert (rate["count"], rate["n"]) == (llm_deals, 12) and rate["lo"] <= rate["rate"] <= \
        rate["hi"]
    # Holm over the two players tested against the model, per measure.
    tests = data["tests"]
    assert [t["a"] for t in tests] == PLAYERS[:2] and all(t["note"] is None for t in tests)
    for stem in ("deal_rate", "distance_to_nash"):
        raw = [t[f"{stem}_p"] for t in tests]
        if all(p is not None for p in raw):
            assert [t[f"{stem}_p_holm"] for t in tests] == pytest.approx(holm(raw))
    russia = [t["parties"]["russia"] for t in tests]
    if all(r["utility_p"] is not None for r in russia):
        assert [r["utility_p_holm"] for r in russia] == pytest.approx(
            holm([r["utility_p"] for r in russia]))
    shown = invoke("compare", swept.path, "--by", "agent:russia", cwd=ROOT)
    text = " ".join(shown.stdout.split())
    assert "36 finished runs (16 distinct) in 3 levels of agent:russia" in text
    assert "Holm-corrected p-value" in text and "Holm-corrected for the 2 groups" in text
    assert "fake-model (reference)" in text


def test_compare_by_temperature_shows_its_effect_and_the_scripted_copies(swept: Swept) -> None:
    data = _json(invoke("compare", swept.path, "--by", "temperature", "--json", cwd=ROOT))
    groups = {g["variant"]: g for g in data["groups"]}
    assert list(groups) == ["0", "1"] and data["correction"] is None  # one group tested
    results = _results(swept.path)
    for level, g in groups.items():
        # Distinct runs: the model's six, and one per scripted player and scenario.
        llm = [r for f, r in results if f["agent:russia"] == MODEL
               and f["temperature"] == level]
        scripted = {(f["scenario"], f["agent:russia"]): r["status"]
                    for f, r in results if f["agent:russia"] != MODEL}
        deals = sum(r["status"] == "deal" for r in llm) + sum(
            s == "deal" for s in scripted.values())
        assert (g["runs"], g["n"]) == (18, 10)
        assert (g["deal_rate"]["count"], g["deal_rate"]["n"]) == (deals, 10)
    (test,) = data["tests"]
    assert test["deal_rate_diff"] == pytest.approx(
        groups["1"]["deal_rate"]["rate"] - groups["0"]["deal_rate"]["rate"])
    assert test["deal_rate_p"] is not None and "deal_rate_p_holm" not in test
    assert any("Temperature changes nothing for scripted agents: 24 of 36 runs" in n
               for n in data["notes"])
    text = " ".join(invoke("compare", swept.path, "--by", "temperature", cwd=ROOT)
                    .stdout.split())
    assert "Not corrected for multiple comparisons (one group tested)" in text


def test_compare_by_two_factors_and_against_a_level(swept: Swept) -> None:
    data = _json(invoke("compare", swept.path, "--by", "agent:russia", "--by", "temperature",
                        "--against", "agent:russia=scripted:boulware, temperature=0", "--json",
                        cwd=ROOT))
    assert data["reference"] == "agent:russia=scripted:boulware, temperature=0"
    assert len(data["groups"]) == 6 and data["correction"] == "holm"
    assert data["group_by"] == "agent:russia x temperature"


@pytest.mark.parametrize(("args", "says"), [
    (["--by", "temprature"], "unknown factor (did you mean temperature?)"),
    (["--by", "agent:russa"], "no such seat among the runs (did you mean agent:russia?)"),
    (["--by", "agent:russia", "--against", "scripted:boulwar"],
     "no level of agent:russia 'scripted:boulwar' among the runs (did you mean "
     "scripted:boulware?)"),
])
def test_an_unknown_factor_or_level_is_one_clear_error(swept: Swept, args: list[str],
                                                       says: str) -> None:
    result = invoke("compare", swept.path, *args, cwd=ROOT)
    assert result.returncode == 2 and result.stdout == ""
    assert says in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_leaderboard_ranks_the_russia_seat(swept: Swept) -> None:
    from detente.leaderboard import best_possible
    from detente.loading import load_scenario

    data = _json(invoke("leaderboard", swept.path, "--seat", "russia", "--json", "--prices",
                        swept.prices, cwd=ROOT))
    (board,) = data["seats"]
    assert board["seat"] == "russia"
    players = {p["player"]: p for p in board["players"]}
    assert set(players) == set(PLAYERS)
    assert [p["rank"] for p in board["players"]] == [1, 2, 3]
    means = [p["advantage"]["mean"] for p in board["players"]]
    assert means == sorted(means, reverse=True)
    # The model's advantage is the mean over its 12 runs of (u - walk-away) / (best - walk-away).
    best = {sid: best_possible(load_scenario(path), "russia") for sid, path in (
        ("baseline", BASELINE), ("russia_full_lifting",
                                 ROOT / "scenarios" / "variants" / "russia_full_lifting.yaml"))}
    values = []
    for f, r in _results(swept.path):
        if f["agent:russia"] == MODEL:
            score = r["scores"]["parties"]["russia"]
            values.append((score["utility"] - score["reservation_utility"])
                          / (best[r["scenario_id"]] - score["reservation_utility"]))
    model = players[MODEL]
    assert model["advantage"]["mean"] == pytest.approx(sum(values) / 12)
    assert model["n"] == 12 and players["scripted:boulware"]["n"] == 2
    assert model["cost_per_run"]["mean"] > 0 and players["scripted:boulware"]["cost_per_run"] \
        is None
    shown = invoke("leaderboard", swept.path, "--seat", "russia", cwd=ROOT)
    assert shown.returncode == 0, shown.stderr
    assert "Seat: russia" in shown.stdout and "12 (2 distinct)" in shown.stdout


# --------------------------------------------------------------------------- small designs


def test_holm_matches_a_worked_example() -> None:
    # Holm (1979): p sorted 0.005, 0.01, 0.03, 0.04 of m = 4 -> x4, x3, x2, x1, made monotone.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.01]) == pytest.approx([0.5, None, 0.02])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 0.8 x 2 capped at 1; monotone


def _design(tmp: Path, **data: Any) -> Path:
    path = tmp / "design.yaml"
    path.write_text(yaml.safe_dump({"scenarios": [str(TINY)], "seeds": 1, **data},
                                   sort_keys=False), encoding="utf-8")
    return path


def test_a_design_file_with_a_subset_protocols_and_round_limits(tmp_path: Path) -> None:
    path = _design(tmp_path, agents={"all": "scripted:linear"}, factors={
        "protocol": ["mediated", "rotating"], "max_rounds": [2, 3],
        "agent:a": ["scripted:boulware", "scripted:conceder"]},
        runs=[{"agent:a": "scripted:boulware"}, {"protocol": "rotating", "max_rounds": 2}])
    done = invoke("sweep", path, "--out", tmp_path / "out", "--name", "d", cwd=ROOT)
    assert done.returncode == 0, done.stderr + done.stdout
    manifest = json.loads((tmp_path / "out" / "d" / "sweep.json").read_text())
    levels = [(e["factors"]["protocol"], e["factors"]["max_rounds"], e["factors"]["agent:a"])
              for e in manifest["entries"]]
    # Every cell with boulware (4), and rotating at 2 rounds with conceder (1).
    assert sorted(levels) == sorted([(p, r, "scripted:boulware") for p in ("mediated",
                                     "rotating") for r in ("2", "3")]
                                    + [("rotating", "2", "scripted:conceder")])
    for e in manifest["entries"]:
        header = json.loads((tmp_path / "out" / "d" / e["run_dir"] / "events.jsonl")
                            .read_text().splitlines()[0])
        assert header["protocol"] == e["factors"]["protocol"]
        assert header["max_rounds"] == int(e["factors"]["max_rounds"])
        assert header["factors"]["scenario"] == "tiny"
    data = _json(invoke("compare", tmp_path / "out" / "d", "--by", "protocol", "--json",
                        cwd=ROOT))
    assert [g["variant"] for g in data["groups"]] == ["mediated", "rotating"]


def test_levels_from_the_command_line_make_a_design(tmp_path: Path) -> None:
    done = invoke("sweep", TINY, "--agent", "all=scripted:linear,a=scripted:boulware,"
                  "scripted:conceder", "--temperature", "0,0.7", "--seeds", "2", "--out",
                  tmp_path, "--name", "f", cwd=ROOT)
    assert done.returncode == 0, done.stderr + done.stdout
    manifest = json.loads((tmp_path / "f" / "sweep.json").read_text())
    assert manifest["factors"] == {"scenario": ["tiny"], "agent:a": ["scripted:boulware",
                                   "scripted:conceder"], "temperature": ["0", "0.7"]}
    assert len(manifest["entries"]) == 8
    assert "4 of 4 cells have every seat scripted" in " ".join(done.stdout.split())
    # Scripted agents ignore the temperature: its levels are copies, never evidence.
    data = _json(invoke("compare", tmp_path / "f", "--by", "temperature", "--json", cwd=ROOT))
    assert [(g["runs"], g["n"]) for g in data["groups"]] == [(4, 2), (4, 2)]
    (test,) = data["tests"]
    assert test["deal_rate_diff"] == 0 and all(
        pt["utility_diff"] == 0 for pt in test["parties"].values())


@pytest.mark.parametrize(("data", "says"), [
    ({"factor": {}}, "factor: unknown key (did you mean factors?)"),
    ({"factors": {"temprature": [0, 1]}}, "factors.temprature: unknown factor (did you mean "
                                          "temperature?)"),
    ({"factors": {"assist": ["none", "tabel"]}}, "level 'tabel': expected one of: none, "
                                                 "table, tool"),
    ({"factors": {"protocol": ["mediatd"]}}, "unknown protocol (did you mean mediated?)"),
    ({"factors": {"agent:zz": ["scripted:linear", "scripted:boulware"]}}, "zz: unknown party"),
    ({"factors": {"agent:a": ["scripted:boulwar", "scripted:linear"]}},
     "unknown strategy 'scripted:boulwar' for a negotiating party (did you mean "
     "scripted:boulware?)"),
    ({"factors": {"max_rounds": [0, 2]}}, "expected a whole number of rounds from 1 to 100"),
    ({"factors": {"agent:a": ["scripted:linear"]}, "runs": [{"agent:a": "scripted:x"}]},
     "runs[0].agent:a: unknown level 'scripted:x'"),
    ({"scenarios": ["missing.yaml"]}, "scenarios: no such file or folder: missing.yaml"),
    ({"seeds": 0}, "seeds: expected a number of seeds"),
])
def test_a_bad_design_file_is_one_clear_error(tmp_path: Path, data: dict[str, Any],
                                              says: str) -> None:
    path = _design(tmp_path, **data)
    result = invoke("sweep", path, "--out", tmp_path / "out", cwd=ROOT)
    assert result.returncode == 2, result.stdout
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_the_python_api_takes_levels_and_compares_by_a_factor(tmp_path: Path) -> None:
    import detente

    done = detente.sweep(TINY, seeds=1, agents={"all": "scripted:linear",
                                                "a": ["scripted:boulware", "scripted:linear"]},
                         temperature=[0, 0.5], out=tmp_path, name="api")
    assert done.manifest.factors == {"scenario": ["tiny"], "agent:a": ["scripted:boulware",
                                     "scripted:linear"], "temperature": ["0", "0.5"]}
    assert len(done.runs()) == 4 and all(r.header.factors for r in done.runs())
    same = detente.sweep(TINY, seeds=1, agents="all=scripted:linear,a=scripted:boulware,"
                         "scripted:linear", temperature="0,0.5", out=tmp_path, name="api")
    assert [e.status for e in same.manifest.entries] == ["complete"] * 4
    comparison = detente.compare(done.path, by="agent:a", against="scripted:linear")
    assert [g.variant for g in comparison.groups] == ["scripted:linear", "scripted:boulware"]
    assert comparison.correction is None and comparison.factors == ["agent:a"]


def test_compare_without_by_on_a_design_names_the_factors_to_group_by(swept: Swept) -> None:
    # Grouped by scenario (the default), each group mixes who played Russia: refused, as ever,
    # with the design's factors as the way out.
    result = invoke("compare", swept.path, cwd=ROOT)
    assert result.returncode == 2 and "cannot be pooled" in result.stderr
    assert "hint: group by a factor that varies among these runs (--by agent:russia" in \
        " ".join(result.stderr.split())


def test_the_report_and_the_charts_group_by_a_factor(swept: Swept, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    done = invoke("report", swept.path, "--by", "agent:russia", "--out", page,
                  "--no-run-charts", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    text = page.read_text(encoding="utf-8")
    for player in PLAYERS:
        assert f'<tr data-variant="{player}"' in text
    assert "Holm-corrected for the groups tested against the reference" in text
    bad = invoke("plot", swept.path, "--by", "temprature", "--out", tmp_path / "plots", cwd=ROOT)
    assert bad.returncode == 2 and "a factor: scenario, seed, model, temperature" in bad.stderr
