"""One way to read a run: `RunFolder`, the events, header, result and scenario of a run folder.

Everything that reads runs (the CLI's show, replay and diff, comparisons, plots and reports,
sweeps, the Python API) goes through it: one place knows a run folder's layout, says "the log
has no header" and checks that a scenario is the one the run used.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from detente.errors import InputError, Problem
from detente.events import LOG_NAME, Event, RunHeader, read_events
from detente.loading import ScenarioBundle, load_bundle
from detente.report import RunResult, build_result, final_outcome, header_of
from detente.scenario import Scenario

RESULT_NAME = "result.json"
TRANSCRIPT_NAME = "transcript.md"
PROMPTS_NAME = "prompts.jsonl"
FINISHED = ("deal", "no_deal", "deadlock")


class RunFolder:
    """A run folder, read on demand (each part once)."""

    def __init__(self, path: str | Path, scenario: str | Path | None = None) -> None:
        self.path = Path(path)
        self._scenario_path = Path(scenario) if scenario is not None else None
        if not self.path.is_dir():
            raise InputError(self.path, [Problem("", "not a folder; expected a run folder")])
        if not (self.path / LOG_NAME).is_file():
            raise InputError(self.path, [Problem("", f"no {LOG_NAME}: is this a run folder?")])

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @cached_property
    def events(self) -> list[Event]:
        return read_events(self.path / LOG_NAME)

    @cached_property
    def header(self) -> RunHeader:
        try:
            return header_of(self.events)
        except ValueError:
            raise InputError(self.path / LOG_NAME, [Problem("", "the log has no header")]) \
                from None

    @cached_property
    def bundle(self) -> ScenarioBundle:
        """The run's scenario and briefs, checked to be the content the run used."""
        path = self._scenario_path or Path(self.header.scenario_path)
        if not path.exists():
            raise InputError(path, [Problem("", "the run's scenario file is not here; pass "
                                            "the scenario's path (--scenario PATH)")])
        bundle = load_bundle(path)
        if bundle.content_hash != self.header.scenario_hash:
            raise InputError(path, [Problem("", "this scenario's content differs from the one "
                                            f"the run used (hash "
                                            f"{self.header.scenario_hash[:12]}); pass the "
                                            "original (--scenario PATH)")])
        return bundle

    @property
    def scenario(self) -> Scenario:
        return self.bundle.scenario

    @cached_property
    def result(self) -> RunResult:
        """`result.json` if present and readable, else rebuilt from the events."""
        path = self.path / RESULT_NAME
        if path.is_file():
            try:
                return RunResult.model_validate_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass
        return build_result(self.scenario, self.events)

    def rebuild(self) -> RunResult:
        """The result scored again from the events by today's scorer (nothing written)."""
        return build_result(self.scenario, self.events)

    @property
    def status(self) -> str:
        outcome = final_outcome(self.events)
        return outcome.status if outcome is not None else "running"

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def transcript(self) -> Path:
        return self.path / TRANSCRIPT_NAME

    @property
    def prompts(self) -> Path:
        return self.path / PROMPTS_NAME

    def by_round(self) -> dict[int, list[Event]]:
        """The events of each round (openings under 0), in log order."""
        rounds: dict[int, list[Event]] = defaultdict(list)
        for event in self.events:
            round_ = getattr(event, "round", None)
            if isinstance(round_, int):
                rounds[round_].append(event)
        return dict(rounds)


def load_run(path: str | Path, scenario: str | Path | None = None) -> RunFolder:
    return RunFolder(path, scenario)


def load_runs(*paths: str | Path | Sequence[str | Path], finished: bool = True
              ) -> list[RunFolder]:
    """Every run folder under `paths` (run folders, sweep folders, glob patterns), finished ones
    only unless `finished=False`."""
    from detente.comparison import find_run_dirs

    flat: list[str | Path] = []
    for path in paths:
        if isinstance(path, str | Path):
            flat.append(path)
        else:
            flat.extend(path)
    runs = [RunFolder(p) for p in find_run_dirs(flat)]
    return [r for r in runs if r.finished] if finished else runs
