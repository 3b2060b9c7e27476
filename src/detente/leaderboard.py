"""Seats and who played them: for each seat, its players ranked by advantage (`detente
leaderboard`).

A player is what played the seat: a scripted strategy (`scripted:boulware`) or a model
(`gpt-4o-mini`), as the run's header names it. Over the finished runs in which it held the seat
(identical runs counted once, as in `detente.comparison`), each player gets:

- advantage: the seat's utility above its walk-away, over the most it could have gained,
  `(utility - walk-away) / (best possible - walk-away)`, as automated negotiation competitions
  (ANAC) normalise it: 0 is the walk-away (no deal scores 0), 1 the seat's best package, below 0
  a deal worse than walking away. The best possible is the seat's utility of its best package
  (each issue's best option and each term's best value, whatever the others think); the
  walk-away is the one the run was scored with (an event during the talks may change it).
  Mean with a 95% bootstrap interval;
- deal rate, and the seat's red-line violations (runs whose deal breaks one of its red lines),
  each with a 95% Wilson interval;
- invalid answers: the seat's turns without a valid answer, over its turns (pooled, Wilson);
- cost per run: what a run's model calls cost (`detente.metrics`'s `cost_per_run`);
- social welfare (the sum of every voting party's utility) and distance to the Nash package of
  the runs it took part in, means with bootstrap intervals.

Players are ranked by mean advantage (ties: deal rate); a rank whose interval overlaps the next
one's is not established, and the table says so. Only voting seats are ranked (a mediator has no
utility). Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from detente.comparison import SkippedRun, summarize_run
from detente.errors import InputError, Problem
from detente.metrics import MeanCI, Proportion, Stat, mean_ci, metric, proportion
from detente.runs import RunFolder, load_runs
from detente.scenario import Scenario


class PlayerStats(BaseModel):
    """One player of one seat."""

    player: str
    rank: int
    runs: int
    """Finished runs in which it held the seat, copies included."""
    n: int
    """Distinct runs: what every figure is over."""
    scripted: bool
    scenarios: list[str]
    advantage: MeanCI | None
    """None: no run in which the seat could gain anything over its walk-away."""
    deal_rate: Proportion
    violation_rate: Proportion
    invalid_rate: Proportion | None
    """None: no turn recorded (a result from before these measures)."""
    cost_per_run: MeanCI | None
    """None: no model call (scripted), or an unpriced model."""
    welfare: MeanCI
    distance_to_nash: MeanCI | None
    established: bool = True
    """False when its advantage interval overlaps the next-ranked player's."""


class SeatBoard(BaseModel):
    seat: str
    players: list[PlayerStats]


class Leaderboard(BaseModel):
    seats: list[SeatBoard]
    runs: int
    """Finished runs read."""
    skipped: list[SkippedRun] = []


def best_possible(scenario: Scenario, party: str) -> float:
    """The party's utility of its best package: the best option of every issue and the best
    value of every term, each by its weight (utilities are additive)."""
    prefs = scenario.preferences[party]
    total = 0.0
    for issue, options in prefs.utilities.items():
        total += prefs.weights[issue] * max(options.values())
    for term, points in prefs.term_utilities.items():
        total += prefs.weights[term] * max(u for _, u in points)
    return total


class _Row(BaseModel):
    """One run, as the leaderboard reads it."""

    fingerprint: str | None
    run_id: str
    scenario_id: str
    deal: bool
    players: dict[str, str]
    scripted: dict[str, bool]
    advantage: dict[str, float | None]
    values: dict[str, Any]
    welfare: float


def _row(run: RunFolder, best: dict[tuple[str, str], float]) -> _Row:
    summary = summarize_run(run)
    result, header = run.result, run.header
    scores = result.scores.parties
    advantage: dict[str, float | None] = {}
    for party, score in scores.items():
        key = (header.scenario_hash, party)
        if key not in best:
            best[key] = best_possible(run.scenario, party)
        room = best[key] - score.reservation_utility
        advantage[party] = (score.utility - score.reservation_utility) / room \
            if room > 1e-9 else None
    return _Row(fingerprint=summary.fingerprint, run_id=summary.run_id,
                scenario_id=summary.scenario_id, deal=summary.deal,
                players={p: a.label() for p, a in header.agents.items()},
                scripted={p: a.kind == "scripted" for p, a in header.agents.items()},
                advantage=advantage, values=summary.values,
                welfare=sum(s.utility for s in scores.values()))


def _distinct(rows: Sequence[_Row]) -> list[_Row]:
    """The first of each set of identical runs (as `detente.comparison.distinct_runs`)."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        if row.fingerprint is None or row.fingerprint not in seen:
            kept.append(row)
            if row.fingerprint is not None:
                seen.add(row.fingerprint)
    return kept


def _party_values(rows: Iterable[_Row], key: str, party: str) -> list[Any]:
    out = []
    for row in rows:
        value = row.values.get(key)
        if isinstance(value, Mapping) and value.get(party) is not None:
            out.append(value[party])
    return out


def _player(seat: str, player: str, rows: Sequence[_Row]) -> PlayerStats:
    kept = _distinct(rows)
    advantages = [a for r in kept if (a := r.advantage.get(seat)) is not None]
    violations = [bool(v) for v in _party_values(kept, "violation_rate", seat)]
    invalid = metric("invalid_rate").pool(_party_values(kept, "invalid_rate", seat))
    cost = metric("cost_per_run").pool(r.values.get("cost_per_run") for r in kept)
    nash = metric("distance_to_nash").pool(r.values.get("distance_to_nash") for r in kept)
    return PlayerStats(
        player=player, rank=0, runs=len(rows), n=len(kept),
        scripted=all(r.scripted.get(seat, False) for r in rows),
        scenarios=sorted({r.scenario_id for r in rows}),
        advantage=mean_ci(advantages),
        deal_rate=proportion(sum(r.deal for r in kept), len(kept)),
        violation_rate=proportion(sum(violations), len(violations)),
        invalid_rate=invalid if isinstance(invalid, Proportion) else None,
        cost_per_run=cost if isinstance(cost, MeanCI) else None,
        welfare=mean_ci([r.welfare for r in kept]) or MeanCI(mean=0, lo=0, hi=0, n=0),
        distance_to_nash=nash if isinstance(nash, MeanCI) else None,
    )


def _ranked(players: list[PlayerStats]) -> list[PlayerStats]:
    def key(p: PlayerStats) -> tuple[float, float, str]:
        mean = p.advantage.mean if p.advantage is not None else float("-inf")
        return (-mean, -p.deal_rate.rate, p.player)

    ordered = sorted(players, key=key)
    for k, p in enumerate(ordered):
        p.rank = k + 1
        nxt = ordered[k + 1] if k + 1 < len(ordered) else None
        if nxt is not None and p.advantage is not None and nxt.advantage is not None:
            p.established = p.advantage.lo > nxt.advantage.hi
    return ordered


def leaderboard(runs: Sequence[RunFolder], seats: Sequence[str] = (),
                skipped: Sequence[SkippedRun] = ()) -> Leaderboard:
    """Each voting seat's players ranked (`seats`: only these). InputError for an unknown
    seat or no runs."""
    if not runs:
        raise InputError("detente leaderboard", [Problem("", "no finished runs to rank")])
    best: dict[tuple[str, str], float] = {}
    rows = [_row(run, best) for run in runs]
    voting: dict[str, None] = {}
    for row in rows:
        voting.update(dict.fromkeys(row.advantage))
    if seats:
        from detente.errors import did_you_mean

        unknown = [s for s in seats if s not in voting]
        if unknown:
            raise InputError("--seat", [Problem(s, f"no voting seat '{s}' in these runs"
                                                f"{did_you_mean(s, list(voting))}; seats: "
                                                f"{', '.join(voting)}") for s in unknown])
    boards = []
    for seat in (list(seats) or list(voting)):
        by_player: dict[str, list[_Row]] = {}
        for row in rows:
            if seat in row.advantage and seat in row.players:
                by_player.setdefault(row.players[seat], []).append(row)
        boards.append(SeatBoard(seat=seat, players=_ranked(
            [_player(seat, player, members) for player, members in by_player.items()])))
    return Leaderboard(seats=boards, runs=len(runs), skipped=list(skipped))


def load_leaderboard(paths: Sequence[str | Path], seats: Sequence[str] = ()) -> Leaderboard:
    """The leaderboard of the finished runs under `paths` (run or sweep folders, patterns);
    unfinished or unreadable runs are listed as skipped."""
    from detente.runs import FINISHED

    found = load_runs(list(paths), finished=False)
    finished: list[RunFolder] = []
    skipped: list[SkippedRun] = []
    for run in found:
        try:
            status = run.result.status
        except InputError as exc:
            skipped.append(SkippedRun(run_dir=str(run.path), status=None,
                                      reason=str(exc).splitlines()[0]))
            continue
        if status in FINISHED:
            finished.append(run)
        else:
            skipped.append(SkippedRun(run_dir=str(run.path), status=status,
                                      reason=run.result.reason))
    if not finished:
        raise InputError(", ".join(str(p) for p in paths),
                         [Problem("", f"found {len(found)} run folders but none finished")])
    return leaderboard(finished, seats, skipped)


# --------------------------------------------------------------------------- tables

COLUMNS = ("advantage", "deal_rate", "violation_rate", "invalid_rate", "cost_per_run",
           "welfare", "distance_to_nash")
"""The figures of a player, in the order shown (each a key of `PlayerStats`)."""
LABELS = {"advantage": "advantage", "deal_rate": "deal rate",
          "violation_rate": "red-line violations", "invalid_rate": "invalid answers",
          "cost_per_run": "cost per run", "welfare": "social welfare",
          "distance_to_nash": "distance to Nash"}
CSV_COLUMNS = ("seat", "rank", "player", "metric", "value", "lo", "hi", "n")


def csv_rows(board: Leaderboard) -> list[dict[str, Any]]:
    """One row per seat, player and figure (`value`, `lo`, `hi`, `n`), plus its runs."""
    rows: list[dict[str, Any]] = []
    for seat in board.seats:
        for p in seat.players:
            base = {"seat": seat.seat, "rank": p.rank, "player": p.player}
            rows.append({**base, "metric": "runs", "value": p.runs, "n": p.runs})
            rows.append({**base, "metric": "distinct_runs", "value": p.n, "n": p.n})
            for key in COLUMNS:
                stat: Stat | None = getattr(p, key)
                if isinstance(stat, Proportion):
                    rows.append({**base, "metric": key, "value": stat.rate, "lo": stat.lo,
                                 "hi": stat.hi, "n": stat.n})
                elif isinstance(stat, MeanCI):
                    rows.append({**base, "metric": key, "value": stat.mean, "lo": stat.lo,
                                 "hi": stat.hi, "n": stat.n})
                else:
                    rows.append({**base, "metric": key})
    return rows


NOTES = (
    "Advantage = (utility - walk-away) / (the seat's best possible - walk-away): 0 is the "
    "walk-away (a run without a deal), 1 the seat's best package, below 0 a deal worse than "
    "walking away; mean over distinct runs with a 95% bootstrap interval. Rates have 95% "
    "Wilson intervals. Identical runs (a scripted player's seeds) count once. Players are "
    "ranked by mean advantage (ties: deal rate); '~' marks a rank whose interval overlaps the "
    "next one's: the order between them is not established. Welfare and distance to Nash are "
    "of the runs the player took part in; cost per run is the whole run's model calls.")
