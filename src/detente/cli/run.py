"""`detente run SCENARIO`: a negotiation from the command line, shown live, recorded in full."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from detente.agents import Agent, make_agent
from detente.cli._app import app, console
from detente.cli._endpoints import embedded_server, preflight, terminate_as_interrupt
from detente.config import env_layer, file_layer, flag_layer, resolve_agents
from detente.errors import InputError, Problem
from detente.events import (
    LOG_NAME,
    AgentSettings,
    Event,
    Outcome,
    Proposal,
    RefusedProposal,
    Response,
    RunHeader,
    Statement,
    Tally,
    ToolCall,
    read_events,
)
from detente.loading import ScenarioBundle, load_bundle
from detente.report import RunResult, describe_package, header_of
from detente.scenario import Scenario

if TYPE_CHECKING:
    from detente.runner import RunRecord

EVENTS = LOG_NAME


@app.command()
def run(
    scenario_path: Path | None = typer.Argument(None, metavar="SCENARIO",
                                                help="A scenario file."),
    rounds: int | None = typer.Option(None, "--rounds", min=1, max=100,
                                      help="Override the scenario's maximum rounds."),
    seed: int = typer.Option(0, "--seed", help="Run seed, sent to every LLM agent whose "
                             "settings pin none."),
    model: str | None = typer.Option(None, "--model", help="Model for every LLM agent."),
    agent: list[str] = typer.Option([], "--agent", metavar="PARTY=SPEC",
                                    help="Who plays a party: a model name or scripted:boulware, "
                                         "scripted:linear, scripted:conceder (parties), "
                                         "scripted:nash, scripted:snt (mediator); all=SPEC."),
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
    config: Path | None = typer.Option(None, "--config", help="A TOML config file."),
    model_path: Path | None = typer.Option(
        None, "--model-path", help="A local GGUF model to serve instead of the embedded one."),
    out: Path = typer.Option(Path("transcripts"), "--out", help="Where run folders go."),
    resume: Path | None = typer.Option(None, "--resume", metavar="RUN_DIR",
                                       help="Continue an interrupted run."),
) -> None:
    """Run a negotiation and write its transcript, events and scored result."""
    from detente.runner import RunPlan, start_run  # langgraph loads only when needed
    with terminate_as_interrupt():
        if resume is not None:
            bundle, record = _resume(resume, base_url)
        else:
            if scenario_path is None:
                raise InputError("detente run", [Problem("SCENARIO", "give a scenario file, "
                                                         "or --resume RUN_DIR")])
            if model_path is not None and not model_path.is_file():
                raise InputError(model_path, [Problem("--model-path", "no such GGUF file")])
            bundle = load_bundle(scenario_path)
            layers = [
                flag_layer(model=model, agents=agent, base_url=base_url,
                           temperature=temperature, max_tokens=max_tokens,
                           max_retries=max_retries, structured_mode=structured_mode,
                           assist=assist, timeout=timeout),
                env_layer(),
                file_layer(config),
            ]
            settings = resolve_agents(bundle.scenario, layers)
            if model_path is not None:
                settings = {p: s.model_copy(update={"model": None, "base_url": None})
                            if s.kind == "llm" else s for p, s in settings.items()}
            with embedded_server(settings, model_path) as agents:
                preflight(agents)
                plan = RunPlan(bundle=bundle, agents=agents, seed=seed, max_rounds=rounds,
                               out_root=out, log_prompts=log_prompts)
                with LiveDisplay(bundle.scenario) as display:
                    record = start_run(plan, make_agent, display)
    summarize(bundle.scenario, record)


def _resume(run_dir: Path, base_url: str | None = None) -> tuple[ScenarioBundle, RunRecord]:
    from detente.runner import resume_run

    if not run_dir.is_dir():
        raise InputError(run_dir, [Problem("", "not a run folder")])
    try:
        header = header_of(read_events(run_dir / EVENTS))
    except ValueError:
        raise InputError(run_dir / EVENTS, [Problem("", "the log has no header")]) from None
    bundle = load_bundle(Path(header.scenario_path))
    local = {s.local_model for s in header.agents.values() if s.local_model}
    model_path = Path(next(iter(local))) if local else None
    settings = dict(header.agents)
    if base_url is not None:
        # The stored URL never keeps credentials; give the endpoint again to resume with them.
        settings = {p: s.model_copy(update={"base_url": base_url})
                    if s.kind == "llm" and not s.local_model else s for p, s in settings.items()}
    with embedded_server(settings, model_path, resuming=True) as agents:
        preflight(agents)

        def factory(party: str, _: AgentSettings, current: ScenarioBundle) -> Agent:
            # Today's endpoints: an embedded server listens on a new port every time.
            return make_agent(party, agents[party], current)

        with LiveDisplay(bundle.scenario) as display:
            return bundle, resume_run(run_dir, factory, display)


# --------------------------------------------------------------------------- display


class LiveDisplay:
    """Round, who is speaking, votes so far, tokens used; a line per event above it."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.round = 0
        self.active: dict[str, str] = {}
        self.votes: dict[str, str] = {}
        self.tokens = 0
        self.live = Live(self, console=console, transient=True, refresh_per_second=8)

    def __enter__(self) -> LiveDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def started(self, run_dir: Path, header: RunHeader) -> None:
        agents = ", ".join(f"{p}={a.label()}" for p, a in header.agents.items())
        self._line(f"Run {header.run_id} -> {run_dir}\nAgents: {agents}")
        if any(a.upper_bound for a in header.agents.values()):
            self._line("The oracle mediator knows every party's utilities: this run is a "
                       "reference, an upper bound, not a negotiation.")

    def speaking(self, party: str, turn: str, round_: int) -> None:
        self.round = max(self.round, round_)
        self.active[party] = turn
        self.live.refresh()

    def event(self, event: Event) -> None:
        usage = getattr(event, "usage", None)
        if usage is not None:
            self.tokens += usage.total
        speaker = getattr(event, "speaker", None)
        if speaker:
            self.active.pop(speaker, None)
        if isinstance(event, Statement) and event.kind == "opening":
            self._line(f"opening  {event.speaker}: {_short(event.text)}")
        elif isinstance(event, RefusedProposal):
            self._line(f"round {event.round}  {event.speaker} re-tabled a rejected package: "
                       "refused, asked again")
        elif isinstance(event, ToolCall):
            self._line(f"round {event.round}  {event.speaker} calls {event.name} (private)")
        elif isinstance(event, Proposal):
            self.round, self.votes = event.round, {}
            self._line(f"round {event.round}  {event.speaker} tables: {event.package.describe()}")
        elif isinstance(event, Statement):
            self._line(f"round {event.round}  private caucus ({event.speaker})")
        elif isinstance(event, Response):
            self.votes[event.speaker] = "invalid" if event.invalid else event.vote
            objections = [k for k, s in event.stances.items() if s.stance == "object"]
            extra = f" (objects to {', '.join(objections)})" if objections else ""
            label = "gives an invalid response" if event.invalid else f"{event.vote}s"
            self._line(f"round {event.round}  {event.speaker} {label}{extra}")
        elif isinstance(event, Tally):
            verdict = "passes" if event.accepted else "fails"
            self._line(f"round {event.round}  tally: the package {verdict}")
        elif isinstance(event, Outcome):
            self._line(f"outcome: {event.status} ({event.reason})")
        self.live.refresh()

    def _line(self, text: str) -> None:
        self.live.console.print(text, markup=False, highlight=False)

    def __rich__(self) -> Group:
        status = Text(f"round {self.round} · tokens {self.tokens:,} · ")
        if self.active:
            status.append("speaking: " + ", ".join(f"{p} ({t})" for p, t in
                                                   self.active.items()), style="bold")
        votes = " ".join(f"{p}:{v}" for p, v in self.votes.items())
        return Group(status, Text(f"votes so far: {votes or '-'}", style="dim"))


def _short(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(scenario: Scenario, record: RunRecord) -> None:
    result: RunResult = record.result
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
    console.print(f"Transcript: {record.run_dir / 'transcript.md'}", markup=False,
                  highlight=False)
