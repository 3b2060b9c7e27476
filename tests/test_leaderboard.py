"""`detente leaderboard` (issue 14, part 3): each seat's players ranked by advantage, with deal
rate, red-line violations, invalid answers, cost per run, welfare and distance to Nash.

The seat's best possible is checked against every package of the tiny scenario; a design sweep
on the tiny scenario (a scripted seat at two strategies, and an LLM on the fake server) is
ranked in this process and written as JSON, CSV and HTML. The shipped Russia design is ranked
in tests/test_designs.py.
"""

from __future__ import annotations

import csv
import html.parser
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from detente.leaderboard import PlayerStats, _ranked, best_possible
from detente.loading import load_scenario
from detente.metrics import mean_ci, proportion
from detente.scenario import Package
from detente.scoring import score
from helpers import ROOT, TINY, Req, SchemaResponder, invoke, load, serve

MODEL = "fake-model"


def test_the_best_possible_is_the_best_package_for_the_seat() -> None:
    scenario = load_scenario(TINY)
    issues = [(i.id, i.option_ids()) for i in scenario.issues]
    terms = [(t.id, [float(v) for v in t.values()]) for t in scenario.terms]
    best: dict[str, float] = {}
    for options in itertools.product(*(ids for _, ids in issues)):
        for values in itertools.product(*(vs for _, vs in terms)):
            package = Package(options=dict(zip([i for i, _ in issues], options, strict=True)),
                              terms=dict(zip([t for t, _ in terms], values, strict=True)))
            for party, s in score(scenario, package).parties.items():
                best[party] = max(best.get(party, 0.0), s.utility)
    assert best and {p: best_possible(scenario, p) for p in best} == pytest.approx(best)


def _player(name: str, advantages: list[float], deals: int = 1) -> PlayerStats:
    ci = mean_ci(advantages)
    assert ci is not None
    return PlayerStats(player=name, rank=0, runs=len(advantages), n=len(advantages),
                       scripted=False, scenarios=["s"], advantage=ci,
                       deal_rate=proportion(deals, len(advantages)),
                       violation_rate=proportion(0, len(advantages)), invalid_rate=None,
                       cost_per_run=None, welfare=ci, distance_to_nash=None)


def test_players_are_ranked_by_advantage_and_overlaps_are_marked() -> None:
    ranked = _ranked([_player("low", [0.1, 0.12, 0.11]), _player("high", [0.9, 0.92, 0.91]),
                      _player("near", [0.05, 0.2, 0.1])])
    assert [(p.player, p.rank) for p in ranked] == [("high", 1), ("near", 2), ("low", 3)]
    # high's interval lies above near's; near's and low's overlap: that order is not known.
    assert [p.established for p in ranked] == [True, False, True]
    tie = _ranked([_player("a", [0.5], deals=0), _player("b", [0.5], deals=1)])
    assert [p.player for p in tie] == ["b", "a"]  # ties go to the higher deal rate


class Steady(SchemaResponder):
    """Party a on the fake server: accepts from round 2 on; says which seed asked."""

    def vote(self, req: Req) -> str:
        return "accept" if req.round >= 2 else "reject"

    def text(self, req: Req, path: tuple[str, ...]) -> str:
        return f"{path[-1]} of {req.party} in round {req.round} (seed {req.body.get('seed')})"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("leaderboard")
    with serve(Steady(load(TINY))) as server:
        done = invoke("sweep", TINY, "--agent", f"all=scripted:conceder,a=scripted:boulware,"
                      f"scripted:linear,{MODEL}", "--base-url", server.base_url, "--seeds", "2",
                      "--rounds", "3", "--out", out, "--name", "s", cwd=ROOT)
    assert done.returncode == 0, done.stderr + done.stdout
    return out / "s"


def _board(sweep: Path, *args: str | Path) -> dict[str, Any]:
    result = invoke("leaderboard", sweep, "--json", *args, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_each_voting_seat_ranks_who_played_it(sweep: Path) -> None:
    data = _board(sweep)
    assert data["runs"] == 6
    seats = {b["seat"]: b for b in data["seats"]}
    assert set(seats) == {"a", "b", "c"}  # the mediator has no utility to rank
    a = {p["player"]: p for p in seats["a"]["players"]}
    assert set(a) == {"scripted:boulware", "scripted:linear", MODEL}
    # Scripted seeds repeat one run: counted once; the model's seeds are distinct runs.
    assert (a["scripted:boulware"]["runs"], a["scripted:boulware"]["n"]) == (2, 1)
    assert (a[MODEL]["runs"], a[MODEL]["n"]) == (2, 2)
    assert [(p["player"], p["rank"]) for p in seats["b"]["players"]] == [
        ("scripted:conceder", 1)]
    assert seats["b"]["players"][0]["runs"] == 6
    # The advantage, from the results: (u - walk-away) / (best - walk-away), over distinct runs.
    scenario = load_scenario(TINY)
    manifest = json.loads((sweep / "sweep.json").read_text())
    for player, stats in a.items():
        values = []
        for e in manifest["entries"]:
            if e["factors"]["agent:a"] == player:
                result = json.loads((sweep / e["run_dir"] / "result.json").read_text())
                s = result["scores"]["parties"]["a"]
                values.append((s["utility"] - s["reservation_utility"])
                              / (best_possible(scenario, "a") - s["reservation_utility"]))
        # (a scripted player's copies have the same value: counting them once keeps the mean)
        assert stats["advantage"]["mean"] == pytest.approx(sum(values) / len(values))
        assert stats["advantage"]["lo"] <= stats["advantage"]["mean"] <= stats["advantage"]["hi"]
    ranks = [p["advantage"]["mean"] for p in seats["a"]["players"]]
    assert ranks == sorted(ranks, reverse=True)
    assert a[MODEL]["invalid_rate"]["n"] > 0 and a[MODEL]["deal_rate"]["n"] == 2


def test_the_leaderboard_as_csv_and_html(sweep: Path, tmp_path: Path) -> None:
    table, page = tmp_path / "board.csv", tmp_path / "board.html"
    done = invoke("leaderboard", sweep, "--seat", "a", "--csv", table, "--html", page,
                  cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "Seat: a" in done.stdout and "Seat: b" not in done.stdout
    assert f"CSV: {table}" in done.stdout
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    players = {r["player"] for r in rows}
    assert players == {"scripted:boulware", "scripted:linear", MODEL}
    metrics = {r["metric"] for r in rows}
    assert {"advantage", "deal_rate", "violation_rate", "invalid_rate", "cost_per_run",
            "welfare", "distance_to_nash", "runs", "distinct_runs"} <= metrics
    adv = next(r for r in rows if r["player"] == MODEL and r["metric"] == "advantage")
    assert float(adv["lo"]) <= float(adv["value"]) <= float(adv["hi"])

    class Cells(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.players: list[str] = []
            self.metrics: set[str] = set()

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = dict(attrs)
            if tag == "tr" and found.get("data-player"):
                self.players.append(str(found["data-player"]))
            if tag == "td" and found.get("data-metric"):
                self.metrics.add(str(found["data-metric"]))

    cells = Cells()
    cells.feed(page.read_text(encoding="utf-8"))
    assert sorted(cells.players) == sorted(players)
    assert cells.metrics == {"advantage", "deal_rate", "violation_rate", "invalid_rate",
                             "cost_per_run", "welfare", "distance_to_nash"}


@pytest.mark.parametrize(("args", "says"), [
    (["--seat", "aa"], "no voting seat 'aa' in these runs (did you mean a?)"),
    (["--seat", "m"], "no voting seat 'm'"),
])
def test_an_unknown_seat_is_one_clear_error(sweep: Path, args: list[str], says: str) -> None:
    result = invoke("leaderboard", sweep, *args, cwd=ROOT)
    assert result.returncode == 2 and says in result.stderr
    assert "Traceback" not in result.stderr


def test_a_folder_without_runs_is_one_clear_error(tmp_path: Path) -> None:
    result = invoke("leaderboard", tmp_path, cwd=ROOT)
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
