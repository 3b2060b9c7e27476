"""LLM-Deliberation's base game: the published runs and detente's runs, measured the same way.

    .venv/bin/python bench/llm_deliberation.py --repo CLONE [RUN_OR_FOLDER ...]

`--repo` is a local clone of https://github.com/S-Abdelnabi/LLM-Deliberation (MIT licence).
From it this reads the base game's score tables (games_descriptions/base/scores_files) and the
logs the authors published of the base game played by one model in every seat, every party
cooperative (logs/*.zip and logs/all_coop_temp1_base_gpt4/; the older zips hold `answers*.json`
files in the format of the repository's old_code branch, the newer folder `history*.json`
files). The other arguments are detente run folders, or folders holding runs, of
`scenarios/benchmarks/llm_deliberation_base*.yaml`; a run given fewer rounds than the game's 25
(`--rounds`) is labelled with its limit, as it is not a full session.

Each session, published or detente's, is reduced to the packages tabled in turn and measured
two ways:

- the **game's rule**, as evaluation/evaluate_deals.ipynb on the repository's main branch
  computes it: only the proposals of the leading party (p1, SportCo; in detente's chaired
  variant, the chair's) count; a party agrees when its score is strictly above its minimum;
  a proposal succeeds with all six, or with five including SportCo and the Department of
  Tourism, SportCo counting as agreeing when its 10-point unanimity bonus would lift it to its
  minimum. *Any*: some counted proposal succeeded; *final*: the last one did; *final, all
  six*: the last one did with every party agreeing (the notebook's "all agreement");
- **detente's zone of agreement**: a package is in it when the rule (five of six, SportCo and
  the Department of Tourism included) passes it with every party accepting exactly when its
  score is at least its minimum (`detente analyze`: 55 of the 720 packages). *Any*: some
  tabled package, whoever tabled it, lay in it (detente's `deal_any_round`); *final*: the last
  tabled package did (`deal_final_round`).

Only complete sessions count: the game's notebook skips a log without all 24 turns and the
final proposal, as here. A turn counts as a proposal when its public answer names an option of
every issue (the notebook's regular expression: the first `A1`..`E9` of each letter); an option
number past an issue's last option (`A4`) makes no proposal, where the notebook would fail.
Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import sys
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detente.scenario import Scenario

ISSUES = "ABCDE"
P1, P2 = "sportco", "tourism_department"
UNANIMITY_BONUS = 10

# The game's score files and the names its logs give each party, against detente's party ids.
SCORE_FILES = {"sportco": "SportCo", "tourism_department": "DoT",
               "environmental_league": "enviroment", "mayor": "mayor",
               "other_cities": "other_cities", "labour_union": "union"}
NAME_KEYS = (("sportco", "sportco"), ("tourism", "tourism_department"),
             ("environment", "environmental_league"), ("mayor", "mayor"),
             ("other cit", "other_cities"), ("union", "labour_union"))

# The published runs of the base game with one model in every seat, all cooperative:
# (label, path under logs/). The folder names are the repository's.
PUBLISHED = (
    ("GPT-4", "output_base_best_allcoop_gpt4.zip"),
    ("GPT-4", "all_coop_temp1_base_gpt4"),
    ("Llama-3-70B", "llama3_70b.zip"),
    ("Llama-2-70B", "llama2_70b_base_all_coop.zip"),
    ("Mixtral-8x7B", "mixtral_base_all_coop.zip"),
    ("Llama-2-13B", "llama2_13b.zip"),
    ("GPT-3.5 as SportCo, GPT-4 elsewhere", "output_base_leading_gpt3_rest_gpt4_allcoop.zip"),
)


@dataclass(frozen=True)
class Game:
    """Each party's points per option (issue letter -> list) and minimum score."""

    points: dict[str, dict[str, list[float]]]
    minimum: dict[str, float]

    def score(self, party: str, deal: Sequence[int]) -> float:
        return sum(self.points[party][ISSUES[i]][k] for i, k in enumerate(deal))

    def options(self) -> list[int]:
        return [len(self.points[P1][issue]) for issue in ISSUES]


@dataclass(frozen=True)
class Session:
    """One negotiation: the packages tabled in turn, each with whether it counts as p1's."""

    proposals: list[tuple[bool, tuple[int, ...]]]


@dataclass(frozen=True)
class Measures:
    any_game: bool
    final_game: bool
    final_all_six: bool
    any_zone: bool
    final_zone: bool


def game_from_repo(repo: Path) -> Game:
    points: dict[str, dict[str, list[float]]] = {}
    minimum: dict[str, float] = {}
    for party, name in SCORE_FILES.items():
        path = repo / "games_descriptions" / "base" / "scores_files" / f"{name}.txt"
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(lines) != len(ISSUES) + 1:
            sys.exit(f"error: {path}: expected {len(ISSUES)} lines of points and a minimum, "
                     f"got {len(lines)} lines")
        points[party] = {issue: [float(x) for x in line.split(",")]
                         for issue, line in zip(ISSUES, lines, strict=False)}
        minimum[party] = float(lines[-1])
    return Game(points, minimum)


def game_from_scenario(scenario: Scenario) -> Game:
    """The game's points read back from a converted scenario: weight x utility per option."""
    prefs = scenario.preferences
    points = {party: {ISSUES[i]: [round(p.weights[issue.id] * p.utilities[issue.id][o], 6)
                                  for o in issue.option_ids()]
                      for i, issue in enumerate(scenario.issues)}
              for party, p in prefs.items()}
    return Game(points, {party: p.reservation_utility for party, p in prefs.items()})


# --------------------------------------------------------------------------- the two measures


def game_rule(game: Game, deal: Sequence[int], proposer_is_p1: bool) -> tuple[bool, bool]:
    """evaluate_deals.ipynb's check of a p1 proposal (loop_all_parties, check_correctness,
    check_agreement), with its strict inequality and SportCo's unanimity bonus: whether it
    succeeds, and whether with all six."""
    scores = {party: game.score(party, deal) for party in game.points}
    agreed = sum(scores[p] > game.minimum[p] for p in scores)
    p1_ok = scores[P1] > game.minimum[P1]
    p2_ok = scores[P2] > game.minimum[P2]
    near = scores[P1] + UNANIMITY_BONUS >= game.minimum[P1]
    if proposer_is_p1 and scores[P1] < game.minimum[P1] and near:
        p1_ok = True
    n = len(scores)
    all_six = agreed == n or (agreed == n - 1 and not p1_ok and near)
    return all_six or (agreed == n - 1 and p1_ok and p2_ok), all_six


def in_zone(game: Game, deal: Sequence[int]) -> bool:
    accept = [p for p in game.points if game.score(p, deal) >= game.minimum[p]]
    return len(accept) >= len(game.points) - 1 and P1 in accept and P2 in accept


def measure(game: Game, session: Session, chaired: bool = False) -> Measures:
    counted = [deal for is_p1, deal in session.proposals if is_p1]
    tabled = [deal for _, deal in session.proposals]
    game_ok = [game_rule(game, deal, proposer_is_p1=not chaired) for deal in counted]
    zone_ok = [in_zone(game, deal) for deal in tabled]
    last = game_ok[-1] if game_ok else (False, False)
    return Measures(any(ok for ok, _ in game_ok), last[0], last[1],
                    any(zone_ok), bool(zone_ok) and zone_ok[-1])


def zone_size(game: Game) -> int:
    return sum(in_zone(game, deal) for deal in itertools.product(*map(range, game.options())))


# --------------------------------------------------------------------------- published logs


def extract_deal(answer: str, game: Game) -> tuple[int, ...] | None:
    """The notebook's extract_deal: the first `<letter><digit>` of each issue's letter."""
    text = answer.replace("\n", "")
    deal = []
    for issue, count in zip(ISSUES, game.options(), strict=True):
        found = re.findall(f"{issue}[1-9]", text)
        if not found or int(found[0][1]) > count:
            return None
        deal.append(int(found[0][1]) - 1)
    return tuple(deal)


def party_of(name: str) -> str:
    low = name.lower()
    for key, party in NAME_KEYS:
        if key in low:
            return party
    raise ValueError(f"unknown party name in a log: {name!r}")


def read_log(data: dict[str, Any], game: Game, turns: int) -> Session | None:
    """A session from either log format, or None if it did not run to its end."""
    rounds = data.get("rounds", [])
    if rounds and isinstance(rounds[0], dict):  # main branch: opening, turns, final proposal
        if len(rounds) != turns + 2:
            return None
        said = [(r["agent"], r["public_answer"]) for r in rounds]
    else:  # old_code branch: opening and turns, then the final proposal apart
        final = (data.get("voting_sessions") or {}).get("0", {}).get("deal_suggestion")
        if len(rounds) != turns + 1 or final is None:
            return None
        said = [(name, answer) for name, answer in rounds] + [("SportCo", final)]
    proposals = []
    for name, answer in said:
        deal = extract_deal(answer, game)
        if deal is not None:
            proposals.append((party_of(name) == P1, deal))
    return Session(proposals)


def published_sessions(repo: Path, entry: str, game: Game, turns: int) -> list[Session]:
    path = repo / "logs" / entry
    if not path.exists():
        sys.exit(f"error: {path} is missing: is --repo a clone of LLM-Deliberation?")

    def files() -> Iterator[tuple[str, bytes]]:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                for name in sorted(archive.namelist()):
                    base = name.rsplit("/", 1)[-1]
                    if base.startswith(("answers", "history")) and base.endswith(".json"):
                        yield name, archive.read(name)
        else:
            for file in sorted(path.glob("history*.json")):
                yield file.name, file.read_bytes()

    sessions = []
    for _, raw in files():
        session = read_log(json.loads(raw), game, turns)
        if session is not None:
            sessions.append(session)
    return sessions


# --------------------------------------------------------------------------- detente's runs


def detente_runs(paths: Iterable[Path]) -> Iterator[tuple[str, Game, Session, bool, bool]]:
    """(label, game, session, chaired, deal by vote) of each finished run under the paths."""
    import detente

    for run in detente.load_runs(*paths):
        scenario = run.scenario
        game = game_from_scenario(scenario)
        header = json.loads(run.path.joinpath("events.jsonl").open(encoding="utf-8").readline())
        who = sorted({a.get("strategy") or a.get("model") or a.get("kind") or "?"
                      for party, a in header["agents"].items() if party != scenario.mediator})
        mediator = scenario.mediator
        label = f"{scenario.id}: {', '.join(who)}"
        if mediator is not None:
            label += f", {header['agents'][mediator].get('strategy', 'LLM')} in the chair"
        limit = header.get("max_rounds")
        if limit is not None and limit != scenario.decision.max_rounds:
            label += f" ({limit} rounds, not the game's {scenario.decision.max_rounds})"
        order = [o.option_ids() for o in scenario.issues]
        proposals = []
        for line in run.path.joinpath("events.jsonl").open(encoding="utf-8"):
            event = json.loads(line)
            if event.get("type") != "proposal":
                continue
            options = event["package"]["options"]
            deal = tuple(order[i].index(options[issue.id])
                         for i, issue in enumerate(scenario.issues))
            speaker = event.get("speaker")
            proposals.append((speaker in (P1, mediator), deal))
        yield label, game, Session(proposals), mediator is not None, run.result.status == "deal"


# --------------------------------------------------------------------------- report


def rate(values: Sequence[bool]) -> str:
    return f"{statistics.mean(values):.0%} ({sum(values)}/{len(values)})" if values else "n/a"


def row(label: str, source: str, measures: Sequence[Measures], deals: str) -> str:
    cells = [label, source, str(len(measures)), deals,
             rate([m.any_game for m in measures]), rate([m.final_game for m in measures]),
             rate([m.final_all_six for m in measures]),
             rate([m.any_zone for m in measures]), rate([m.final_zone for m in measures])]
    return "| " + " | ".join(cells) + " |"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, help="a local clone of LLM-Deliberation")
    parser.add_argument("--turns", type=int, default=24,
                        help="turns in a published session (the repository's rounds_num)")
    parser.add_argument("runs", type=Path, nargs="*", help="detente runs or folders of runs")
    args = parser.parse_args(argv)
    if args.repo is None and not args.runs:
        parser.error("give --repo CLONE, detente runs, or both")

    print("| players | source | sessions | deal by vote | game rule: any | game rule: final "
          "| game rule: final, all six | zone: any | zone: final |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    if args.repo is not None:
        game = game_from_repo(args.repo)
        print(f"<!-- the game's tables: {zone_size(game)} of "
              f"{len(list(itertools.product(*map(range, game.options()))))} packages in the "
              "zone -->")
        for label, entry in PUBLISHED:
            sessions = published_sessions(args.repo, entry, game, args.turns)
            print(row(label, f"published logs `{entry}`", [measure(game, s) for s in sessions],
                      "no vote"))
    groups: dict[str, list[tuple[Measures, bool]]] = {}
    for label, game, session, chaired, deal in detente_runs(args.runs):
        groups.setdefault(label, []).append((measure(game, session, chaired), deal))
    for label, items in groups.items():
        print(row(label, "detente", [m for m, _ in items], rate([d for _, d in items])))


if __name__ == "__main__":
    main()
