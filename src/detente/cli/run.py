"""`detente run SCENARIO`: a negotiation from the command line, shown live, recorded in full."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from detente.cli._app import agent_help, app, console
from detente.cli._endpoints import terminate_as_interrupt
from detente.errors import DetenteError, InputError, Problem

if TYPE_CHECKING:  # the models load when a command runs, not for every --help
    from detente.cli.human import TerminalHuman
    from detente.costs import Cost
    from detente.events import Event, RunHeader
    from detente.report import RunResult
    from detente.scenario import Scenario


@app.command()
def run(
    scenario_path: Path | None = typer.Argument(
        None, metavar="SCENARIO", help="A scenario file (with --resume: the run's scenario, if "
                                       "it has moved)."),
    rounds: int | None = typer.Option(None, "--rounds", min=1, max=100,
                                      help="Override the scenario's maximum rounds."),
    seed: int = typer.Option(0, "--seed", help="Run seed, sent to every LLM agent whose "
                             "settings pin none."),
    model: str | None = typer.Option(None, "--model", help="Model for every LLM agent."),
    agent: list[str] = typer.Option([], "--agent", metavar="PARTY=SPEC",
                                    help=agent_help()),
    base_url: str | None = typer.Option(None, "--base-url",
                                        help="OpenAI-compatible endpoint for LLM agents (with "
                                             "--resume: the endpoint to resume on)."),
    temperature: float | None = typer.Option(None, "--temperature", min=0.0, max=2.0),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1),
    max_retries: int | None = typer.Option(
        None, "--max-retries", min=0, help="HTTP retries per model call (default 2)."),
    structured_mode: str | None = typer.Option(
        None, "--structured-mode", help="json_schema (OpenAI), json_object (llama.cpp), prompt."),
    assist: list[str] = typer.Option(
        [], "--assist", metavar="[PARTY=]MODE",
        help="What LLM parties are told of a package's worth: none, table (its value and the "
             "red lines it breaks) or tool (an evaluate_package tool). Default: table on the "
             "embedded model, none elsewhere."),
    log_prompts: bool = typer.Option(
        True, "--log-prompts/--no-log-prompts",
        help="Keep every model request and raw response in the run's prompts.jsonl."),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0.001, metavar="SECONDS",
        help="Seconds a model request may take (default 60; 600 on the embedded model)."),
    max_connections: int | None = typer.Option(
        None, "--max-connections", min=1,
        help="Connections to one endpoint at once (default 64)."),
    config: Path | None = typer.Option(None, "--config", help="A TOML config file."),
    model_path: Path | None = typer.Option(
        None, "--model-path", help="A local GGUF model to serve instead of the embedded one."),
    out: Path = typer.Option(Path("transcripts"), "--out", help="Where run folders go."),
    resume: Path | None = typer.Option(None, "--resume", metavar="RUN_DIR",
                                       help="Continue an interrupted run."),
    budget: float | None = typer.Option(
        None, "--budget", metavar="USD", min=0.0,
        help="Stop before a model call that could take the run's cost past USD dollars "
             "(status budget, exit 3); with --resume: the limit from then on, over all the "
             "run has spent (default: the run's own)."),
    cache: bool = typer.Option(
        False, "--cache/--no-cache",
        help="Answer requests already answered from the response cache (free; see detente "
             "cache stats)."),
    prices: Path | None = typer.Option(
        None, "--prices", metavar="FILE",
        help="A price file over the shipped table (USD per million tokens; see the README)."),
) -> None:
    """Run a negotiation and write its transcript, events and scored result."""
    from detente import api
    from detente.loading import load_bundle
    from detente.runner import RunPaused

    try:
        with terminate_as_interrupt():
            if resume is not None:
                # SCENARIO with --resume: the run's scenario file, if it has moved.
                scenario = api.load_run(resume, scenario_path).scenario
                with LiveDisplay(scenario) as display:
                    folder = api.resume(resume, scenario=scenario_path, base_url=base_url,
                                        observer=display, notice=display.notice,
                                        human=display.human(), budget=budget, cache=cache,
                                        prices=prices)
            else:
                if scenario_path is None:
                    raise InputError("detente run", [Problem("SCENARIO", "give a scenario "
                                                             "file, or --resume RUN_DIR")])
                scenario = load_bundle(scenario_path).scenario
                with LiveDisplay(scenario) as display:
                    folder = api.run(
                        scenario_path, agent, seed, rounds=rounds, model=model,
                        base_url=base_url, temperature=temperature, max_tokens=max_tokens,
                        max_retries=max_retries, structured_mode=structured_mode,
                        assist=assist, timeout=timeout, max_connections=max_connections,
                        config=config, model_path=model_path, out=out,
                        log_prompts=log_prompts, observer=display, notice=display.notice,
                        human=display.human(), budget=budget, cache=cache, prices=prices)
    except RunPaused as paused:
        console.print(Text(f"Paused: {paused}", style="bold yellow"))
        return
    summarize(scenario, folder.result, folder.path)


# --------------------------------------------------------------------------- display


PRIOR_SECONDS_PER_CALL = {"embedded": 15.0, "remote": 5.0}
"""What a model call is assumed to take before the first one finishes (the embedded model on
two cores answers one call at a time in about 15 s)."""


class LiveDisplay:
    """A line per event above a status block that never looks hung: the round, the elapsed time
    of the run and of every pending call, an estimate of what is left, tokens, and the votes."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.round = 0
        self.max_rounds = scenario.decision.max_rounds
        self.active: dict[str, tuple[str, float]] = {}
        self.votes: dict[str, str] = {}
        self.tokens = 0
        self.began = time.monotonic()
        self.calls = 0
        """Model calls finished in this process."""
        self.llm: set[str] = set()
        self.embedded = False
        self.humans: set[str] = set()
        """Seats a person plays: asked once the agents answering at the same time are done."""
        self.openings_left = len(scenario.parties)
        self.caucus: dict[int, str] = {}
        self.live = Live(self, console=console, transient=True, refresh_per_second=4)

    def __enter__(self) -> LiveDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def human(self) -> TerminalHuman:
        """Asks a person's turns in this terminal, the live block stopped while they type."""
        from detente.cli.human import TerminalHuman

        return TerminalHuman(console, pause=self.live.stop, resume=self.live.start)

    def notice(self, text: str) -> None:
        """A note from setting up (the local model server starting), printed above."""
        self._line(text)

    def started(self, run_dir: Path, header: RunHeader) -> None:
        self.began = time.monotonic()  # the run's clock starts with the run, not the server
        self.max_rounds = header.max_rounds
        self.llm = {p for p, a in header.agents.items() if a.kind == "llm"}
        self.humans = {p for p, a in header.agents.items() if a.kind == "human"}
        self.embedded = any(a.local_model for a in header.agents.values())
        agents = ", ".join(f"{p}={a.label()}" for p, a in header.agents.items())
        self._line(f"Run {header.run_id} -> {run_dir}\nAgents: {agents}")
        if any(a.upper_bound for a in header.agents.values()):
            self._line("The oracle mediator knows every party's utilities: this run is a "
                       "reference, an upper bound, not a negotiation.")
        self._prime(run_dir)

    def _prime(self, run_dir: Path) -> None:
        """On resume: what the log already holds (tokens, the round, its votes so far)."""
        from detente.events import LOG_NAME, Proposal, Response, Statement, read_events

        try:
            logged = read_events(run_dir / LOG_NAME)
        except DetenteError:
            return
        turns = [e for e in logged if isinstance(e, Statement | Proposal | Response)]
        if not turns:
            return
        self.tokens = sum(e.usage.total for e in turns)
        self.openings_left = len(self.scenario.parties) - sum(
            1 for e in turns if isinstance(e, Statement) and e.kind == "opening")
        proposals = [e for e in logged if isinstance(e, Proposal)]
        if proposals:
            self.round = proposals[-1].round
            self.votes = {e.speaker: "invalid" if e.invalid else e.vote for e in logged
                          if isinstance(e, Response) and e.round == self.round}
        self._line(f"resumed: {len(turns)} turns already logged, {self.tokens:,} tokens, "
                   f"round {self.round}" + (f", votes {self._votes()}" if self.votes else ""))

    def speaking(self, party: str, turn: str, round_: int) -> None:
        self.round = max(self.round, round_)
        self.active[party] = (turn, time.monotonic())
        self.live.refresh()

    def event(self, event: Event) -> None:
        from detente.events import (
            Outcome,
            Proposal,
            RefusedProposal,
            Response,
            Statement,
            Tally,
            ToolCall,
        )

        usage = getattr(event, "usage", None)
        if usage is not None:
            self.tokens += usage.total
        if getattr(event, "llm", None) is not None:
            self.calls += 1
        speaker = getattr(event, "speaker", None)
        if speaker and not isinstance(event, ToolCall):
            self.active.pop(speaker, None)
        if isinstance(event, Statement) and event.kind == "opening":
            self.openings_left = max(self.openings_left - 1, 0)
            self._line(f"opening  {event.speaker}: {_short(event.text)}")
        elif isinstance(event, RefusedProposal):
            self._line(f"round {event.round}  {event.speaker} re-tabled a rejected package: "
                       "refused, asked again")
        elif isinstance(event, ToolCall):
            self._line(f"round {event.round}  {event.speaker} calls {event.name} (private)")
        elif isinstance(event, Proposal):
            self.round, self.votes = event.round, {}
            again = " (a rejected package again: it stands after every refusal)" \
                if event.repeats_rejected else ""
            self._line(f"round {event.round}  {event.speaker} tables{again}: "
                       f"{event.package.describe()}")
        elif isinstance(event, Statement) and event.kind == "caucus":
            self.caucus[event.round] = event.speaker
        elif isinstance(event, Statement):
            other = self.caucus.get(event.round, "the proposer")
            self._line(f"round {event.round}  private caucus: {other} and {event.speaker}")
        elif isinstance(event, Response):
            self.votes[event.speaker] = "invalid" if event.invalid else event.vote
            wants = [f"{k} (wants {s.wants})" if s.wants is not None else k
                     for k, s in event.stances.items() if s.stance == "object"]
            extra = f"; objects to {', '.join(wants)}" if wants else "; objects to nothing"
            label = "gives an invalid response" if event.invalid else f"{event.vote}s"
            self._line(f"round {event.round}  {event.speaker} {label}"
                       f"{'' if event.invalid else extra}")
        elif isinstance(event, Tally):
            verdict = "passes" if event.accepted else "fails"
            accepts = sum(v == "accept" for v in event.votes.values())
            self._line(f"round {event.round}  tally: the package {verdict} ({accepts} of "
                       f"{len(event.votes)} accept)")
        elif isinstance(event, Outcome):
            self._line(f"outcome: {event.status} ({event.reason})")
        self.live.refresh()

    def _line(self, text: str) -> None:
        self.live.console.print(text, markup=False, highlight=False)

    def _votes(self) -> str:
        return " ".join(f"{p}:{v}" for p, v in self.votes.items())

    def left(self) -> float | None:
        """Seconds the rest may take, at most: every round still to play, at the pace of the
        calls so far (before the first call ends, at a prior pace)."""
        if not self.llm:
            return None  # scripted agents answer in milliseconds
        voters = [p for p in self.scenario.voters if p in self.llm]
        proposer_llm = (self.scenario.mediator in self.llm if self.scenario.mediator
                        else bool(voters))
        per_round = len(voters) + int(proposer_llm)
        rounds_left = max(self.max_rounds - self.round, 0) + (1 if self.votes and len(
            self.votes) < len(self.scenario.voters) else 0)
        calls_left = min(self.openings_left, len(self.llm)) + rounds_left * per_round
        elapsed = time.monotonic() - self.began
        pace = (elapsed / self.calls if self.calls else
                PRIOR_SECONDS_PER_CALL["embedded" if self.embedded else "remote"])
        if not self.embedded and not self.calls:
            pace /= max(len(self.llm), 1)  # a remote endpoint answers the parties at once
        return calls_left * pace

    def __rich__(self) -> Group:
        now = time.monotonic()
        status = Text(f"round {self.round} of {self.max_rounds} · elapsed "
                      f"{_clock(now - self.began)}")
        left = self.left()
        if left is not None:
            status.append(f" · left ≤ {_clock(left)} (estimate, if all rounds are played)")
        status.append(f" · tokens {self.tokens:,}")
        lines = [status]
        agents = {p: v for p, v in self.active.items() if p not in self.humans}
        if agents:
            lines.append(Text("waiting for: " + ", ".join(
                f"{p} ({t}, {_clock(now - since)})" for p, (t, since) in agents.items()),
                style="bold"))
        yours = [f"{p} ({t})" for p, (t, _) in self.active.items() if p in self.humans]
        if yours:
            lines.append(Text(f"your turn next: {', '.join(yours)}, once the others answering "
                              "now are done", style="bold cyan"))
        lines.append(Text(f"votes this round: {self._votes() or '-'}", style="dim"))
        return Group(*lines)


def _clock(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _short(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(scenario: Scenario, result: RunResult, run_dir: Path) -> None:
    from detente.report import describe_package

    style = "bold green" if result.status == "deal" else "bold yellow"
    console.print(Text(f"{result.status.upper()}: {result.reason}", style=style))
    if result.upper_bound:
        console.print(Text("Reference run (oracle mediator): an upper bound on what the agents "
                           "could reach.", style="yellow"))
    if result.package is not None:
        package = Table(title="Agreed package", show_header=False)
        for line in describe_package(scenario, result.package):
            issue, _, choice = line.partition(": ")
            package.add_row(issue.strip("*"), choice)
        console.print(package)
    table = Table(title="Scores")
    for col in ("party", "utility", "reservation", "surplus", "red lines", "vote", "tokens"):
        table.add_column(col, justify="left" if col in ("party", "red lines") else "right")
    for party, s in result.scores.parties.items():
        broken = ", ".join(b.id for b in s.red_lines_broken)
        table.add_row(party, f"{s.utility:.1f}", f"{s.reservation_utility:.1f}",
                      f"{s.surplus:+.1f}",
                      Text(f"broken: {broken}", style="red") if broken else Text("held",
                                                                                 style="green"),
                      s.vote or "", f"{result.tokens[party].total_tokens:,}")
    console.print(table)
    against = result.votes_against_own_red_lines
    if against:
        by: dict[str, int] = {}
        for vote in against:
            by[vote.party] = by.get(vote.party, 0) + 1
        console.print(Text(f"{len(against)} accept vote(s) went against the voter's own red "
                           "lines: " + ", ".join(f"{p} {n}" for p, n in by.items()),
                           style="red"))
    else:
        console.print("No vote went against the voter's own red lines.", markup=False,
                      highlight=False)
    if result.cost is not None and result.cost.total.requests:
        console.print(cost_line(result.cost.total), markup=False, highlight=False)
    console.print(f"Transcript: {run_dir / 'transcript.md'}", markup=False,
                  highlight=False)


def cost_line(cost: Cost) -> str:
    """`Cost: $0.0123 (12 requests, 3 from the cache; 9,876 tokens)`."""
    from detente.costs import format_usd

    cached = f", {cost.cached_requests} from the cache" if cost.cached_requests else ""
    return (f"Cost: {format_usd(cost)} ({cost.requests} requests{cached}; "
            f"{cost.total_tokens:,} tokens)")
