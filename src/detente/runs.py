"""One way to read runs: `RunFolder`, the events, header, result and scenario of a run folder.

Everything that reads runs back (the CLI's show, replay, diff, compare, plot and report, the HTML
report, sweeps, the Python API) goes through it: one place knows a run folder's layout, finds run
folders below a sweep folder (`find_run_dirs`), says "the log has no header", and checks that a
scenario is the one the run used. Every part is read on first use and once; a part that cannot
be read raises `InputError` with one clear message.
"""

from __future__ import annotations

import glob
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from detente.errors import InputError, Problem
from detente.events import LOG_NAME, Event, RunHeader, read_events
from detente.loading import ScenarioBundle, load_bundle
from detente.report import RunResult, build_result, final_outcome, header_of
from detente.scenario import Scenario

if TYPE_CHECKING:
    from detente.judgements import Judgement, LeakCheck

RESULT_NAME = "result.json"
TRANSCRIPT_NAME = "transcript.md"
PROMPTS_NAME = "prompts.jsonl"
SWEEP_MANIFEST = "sweep.json"
FINISHED = ("deal", "no_deal", "deadlock")
"""Statuses of finished runs: the ones compared; running, interrupted and failed runs are not."""


_WHERE = "--scenario PATH; with detente run --resume RUN, as SCENARIO"
"""Where a user gives a run's scenario that has moved."""


class RunFolder:
    """A run folder, read on demand (each part once).

    `scenario` is the run's scenario file if it has moved; `bundles` caches the scenarios loaded
    for several folders (`load_runs` shares one among the runs it finds).
    """

    def __init__(self, path: str | Path, scenario: str | Path | None = None, *,
                 bundles: dict[Path, ScenarioBundle] | None = None) -> None:
        self.path = Path(path)
        self._scenario_path = Path(scenario) if scenario is not None else None
        self._bundles = bundles if bundles is not None else {}
        if not self.path.is_dir():
            raise InputError(self.path, [Problem("", "not a folder; expected a run folder")])
        if not (self.path / LOG_NAME).is_file():
            raise InputError(self.path, [Problem("", f"no {LOG_NAME}: is this a run folder?")])

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ------------------------------------------------------------------ the log

    @cached_property
    def events(self) -> list[Event]:
        log = self.path / LOG_NAME
        try:
            return read_events(log)
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise InputError(log, [Problem("", f"cannot read: {reason}")]) from None

    @cached_property
    def header(self) -> RunHeader:
        try:
            return header_of(self.events)
        except ValueError:
            raise InputError(self.path / LOG_NAME, [Problem("", "the log has no header")]) \
                from None

    @property
    def started(self) -> bool:
        """The log opens with a header: the run got going and can be resumed. Reads one line
        (a sweep asks this of every run before resuming it)."""
        try:
            with (self.path / LOG_NAME).open(encoding="utf-8") as handle:
                first = handle.readline()
            return bool(json.loads(first).get("type") == "header")
        except (OSError, ValueError, AttributeError):
            return False

    def by_round(self) -> dict[int, list[Event]]:
        """The events of each round (openings under 0), in log order."""
        rounds: dict[int, list[Event]] = defaultdict(list)
        for event in self.events:
            round_ = getattr(event, "round", None)
            if isinstance(round_, int):
                rounds[round_].append(event)
        return dict(rounds)

    @property
    def label(self) -> str:
        """`<scenario id> seed <n> (<run id>)`: short and unique enough for titles."""
        h = self.header
        return f"{h.scenario_id} seed {h.seed} ({h.run_id})"

    # ------------------------------------------------------------------ the scenario

    @cached_property
    def bundle(self) -> ScenarioBundle:
        """The run's scenario and briefs, checked to be the content the run used.

        The scenario is the one given to the constructor, else the header's `scenario_path`:
        as written (relative to the working folder), or relative to a folder above the run
        (runs are often kept inside the project that holds the scenarios).
        """
        path = self._scenario_path or self._find_scenario(Path(self.header.scenario_path))
        key = path.resolve()
        if key not in self._bundles:
            self._bundles[key] = load_bundle(path)
        bundle = self._bundles[key]
        if bundle.content_hash != self.header.scenario_hash:
            raise InputError(path, [Problem("", "this scenario's content differs from the one "
                                            f"the run used (hash "
                                            f"{self.header.scenario_hash[:12]}); pass the "
                                            f"original ({_WHERE})")])
        return bundle

    def _find_scenario(self, recorded: Path) -> Path:
        if recorded.exists():
            return recorded
        if not recorded.is_absolute():
            for folder in self.path.resolve().parents:
                if (folder / recorded).is_file():
                    return folder / recorded
        raise InputError(recorded, [Problem("", f"the scenario of run {self.path} is not here "
                                            "(looked in the working folder and above the run); "
                                            f"pass the scenario's path ({_WHERE})")])

    @property
    def scenario(self) -> Scenario:
        return self.bundle.scenario

    # ------------------------------------------------------------------ the result

    @cached_property
    def stored_result(self) -> RunResult:
        """`result.json` as written; InputError when it is missing or cannot be read."""
        path = self.path / RESULT_NAME
        if not path.is_file():
            raise InputError(self.path, [Problem("", f"no {RESULT_NAME}: rebuild it with "
                                                 f"`detente replay {self.path}`")])
        try:
            return RunResult.model_validate_json(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(path, [Problem("", f"cannot read: {exc.strerror}")]) from None
        except UnicodeDecodeError:
            raise InputError(path, [Problem("", "not UTF-8 text")]) from None
        except ValueError as exc:  # pydantic's ValidationError (and bad JSON) among them
            raise InputError(path, [Problem("", _first_error(exc))]) from None

    @cached_property
    def result(self) -> RunResult:
        """`result.json` when it can be read and belongs to this run (its run id and scenario
        hash are the header's), else the result scored again from the events (which needs the
        scenario)."""
        try:
            stored = self.stored_result
        except InputError:
            return self.rebuild()
        if stored.run_id != self.header.run_id or stored.scenario_hash != \
                self.header.scenario_hash:
            return self.rebuild()
        return stored

    def rebuild(self) -> RunResult:
        """The result scored again from the events by today's scorer (nothing written)."""
        return build_result(self.scenario, self.events)

    @property
    def status(self) -> str:
        """The result's status: `result.json`'s when it can be read, else the log's outcome
        (`running` without one)."""
        try:
            return self.stored_result.status
        except InputError:
            outcome = final_outcome(self.events)
            return outcome.status if outcome is not None else "running"

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def read(self) -> RunFolder:
        """Read every part now (events, header, scenario, result) rather than on first use, so
        a run that cannot be read stops a command before it writes anything; returns self."""
        _ = self.bundle, self.result
        return self

    @cached_property
    def judgements(self) -> list[LeakCheck | Judgement]:
        """`judgements.jsonl` as `detente judge` wrote it: leak checks and judgements (an
        empty list when the run was never judged)."""
        from detente.judgements import JUDGEMENTS_NAME, read_judgements

        return read_judgements(self.path / JUDGEMENTS_NAME)

    @property
    def transcript(self) -> Path:
        return self.path / TRANSCRIPT_NAME

    @property
    def prompts(self) -> Path:
        return self.path / PROMPTS_NAME


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc).splitlines()[0]
    first = errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


# --------------------------------------------------------------------------- finding runs


def is_run_dir(path: Path) -> bool:
    """A run folder (one that can be found below another) holds `result.json` and the log."""
    return (path / RESULT_NAME).is_file() and (path / LOG_NAME).is_file()


def find_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Every run folder named by `paths` (run folders, folders holding runs, glob patterns), in
    the order given (folders below one path sorted), each once.

    Raises InputError for a path that does not exist, a pattern that matches nothing, or a path
    under which there is no run folder.
    """
    if not paths:
        raise InputError("detente", [Problem("PATH", "give at least one run folder, sweep "
                                              "folder or glob pattern")])
    found: dict[Path, Path] = {}
    for given in paths:
        text = str(given)
        explicit = not glob.has_magic(text)
        if explicit:
            target = Path(text)
            if not target.exists():
                raise InputError(target, [Problem("", "no such file or folder")])
            targets = [target]
        else:
            targets = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            if not targets:
                raise InputError(text, [Problem("", "no file or folder matches this pattern")])
        run_dirs = [d for t in targets for d in _runs_under(t, explicit)]
        if not run_dirs:
            raise InputError(text, [Problem("", f"no run folders here (a run folder holds "
                                            f"{RESULT_NAME} and {LOG_NAME})")])
        for run_dir in run_dirs:
            found.setdefault(run_dir.resolve(), run_dir)
    return list(found.values())


def _runs_under(target: Path, explicit: bool) -> list[Path]:
    if target.is_file():
        if target.name in (RESULT_NAME, LOG_NAME, SWEEP_MANIFEST):
            target = target.parent
        elif explicit:
            raise InputError(target, [Problem("", "not a folder: give run folders, sweep "
                                              "folders or glob patterns")])
        else:
            return []
    if is_run_dir(target):
        return [target]
    out: list[Path] = []
    for root, dirs, _files in os.walk(target):
        dirs.sort()
        here = Path(root)
        if here != target and is_run_dir(here):
            out.append(here)
            dirs.clear()  # a run folder holds no other run
    return out


# --------------------------------------------------------------------------- loading


def load_run(path: str | Path, scenario: str | Path | None = None) -> RunFolder:
    return RunFolder(path, scenario)


def load_runs(*paths: str | Path | Sequence[str | Path], finished: bool = True,
              scenario: str | Path | None = None) -> list[RunFolder]:
    """Every run folder under `paths` (run folders, sweep folders, glob patterns), finished ones
    only unless `finished=False`; `scenario`: their scenario file, if it has moved. The runs
    share one cache of scenarios. Nothing but the status (with `finished`) is read yet."""
    flat: list[str | Path] = []
    for path in paths:
        if isinstance(path, str | Path):
            flat.append(path)
        else:
            flat.extend(path)
    bundles: dict[Path, ScenarioBundle] = {}
    runs = [RunFolder(p, scenario, bundles=bundles) for p in find_run_dirs(flat)]
    return [r for r in runs if r.finished] if finished else runs
