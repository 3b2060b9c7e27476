"""The typer application object, its commands (loaded when used) and the shared consoles.

A command's module is imported only when that command runs (or prints its own help): `detente
--help` lists the commands from `COMMANDS`, so it imports none of them, and `detente show`
imports what `show` needs and nothing that `run` or `compare` needs (langgraph, openai, numpy,
scipy, matplotlib). `tests/test_startup.py` keeps each line of `COMMANDS` equal to its
command's docstring.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

COMMANDS: dict[str, tuple[str, str]] = {
    "analyze": ("detente.cli.analyze", "Enumerate every package: ZOPA, Pareto frontier, Nash "
                "and Kalai-Smorodinsky packages."),
    "cache": ("detente.cli.cache", "The response cache: stats (entries, size, hits) and clear "
              "(all, or older than some days)."),
    "compare": ("detente.cli.compare", "Compare finished runs per variant: deal rates, "
                "utilities, red lines, agreed options."),
    "diff": ("detente.cli.diff", "Compare two runs round by round: tables, votes, who moved, "
             "and the outcomes."),
    "judge": ("detente.cli.judge", "Judge every party's words against a rubric, and find "
              "private numbers said in public."),
    "leaderboard": ("detente.cli.leaderboard", "Rank the models and strategies that played "
                    "each seat: advantage, deals, red lines, cost."),
    "plot": ("detente.cli.plot", "Chart runs: one run's utilities by round; for several, agreed "
             "options and rates."),
    "plugins": ("detente.cli.plugins", "List the scripted strategies, mediators, protocols and "
                "providers, built in or plugged in."),
    "run": ("detente.cli.run", "Run a negotiation and write its transcript, events and scored "
            "result."),
    "replay": ("detente.cli.replay", "Rebuild transcript.md and re-score result.json from "
               "events.jsonl (no model calls)."),
    "show": ("detente.cli.replay", "Print a run in the terminal: every round, the votes, the "
             "outcome and the scores."),
    "report": ("detente.cli.report", "Write one HTML page (no network needed) with comparison, "
               "charts and transcripts."),
    "schema": ("detente.cli.schema", "Print the JSON Schema of the event log format."),
    "sources": ("detente.cli.sources", "Count the claims that rest on each source tag, per "
                "party."),
    "sweep": ("detente.cli.sweep", "Run every scenario x seed into one sweep folder; rerunning "
              "skips what is complete."),
    "validate": ("detente.cli.validate", "Check scenario and agent brief files; exit 2 if any is "
                 "invalid."),
}
"""Every command: the module that defines it, and the first line of its help."""


class _Listed(TyperCommand):
    """A command as the command list shows it, before its module is imported."""


class LazyGroup(TyperGroup):
    """The `detente` group: every command of `COMMANDS`, its module imported on first use."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, (_, summary) in COMMANDS.items():
            self.commands.setdefault(name, _Listed(name=name, help=summary))
        self._listing = False

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        if isinstance(command, _Listed) and not self._listing:
            command = self.commands[cmd_name] = load_command(cmd_name)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True  # the list of commands needs only their names and summaries
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def load_command(name: str) -> Any:
    """The click command `name`, its module imported (it registers itself on `app`, as a
    command or as a group of subcommands)."""
    importlib.import_module(COMMANDS[name][0])
    for info in app.registered_commands:
        assert info.callback is not None
        if (info.name or typer.main.get_command_name(info.callback.__name__)) == name:
            return typer.main.get_command_from_info(
                info, pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode)
    for group in app.registered_groups:
        if group.name == name:
            return typer.main.get_group_from_info(
                group, pretty_exceptions_short=app.pretty_exceptions_short,
                suggest_commands=app.suggest_commands, rich_markup_mode=app.rich_markup_mode)
    raise LookupError(f"{COMMANDS[name][0]} defines no command '{name}'")


app = typer.Typer(
    name="detente",
    help="Stage peace negotiations between LLM agents and judge their outcomes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=LazyGroup,
)


@app.callback()
def _detente() -> None:
    # A callback makes typer build a group even before any command module is imported.
    pass


console = Console()
err_console = Console(stderr=True)


def warn_skipped(skipped: Any) -> None:
    """On stderr, one line per run folder a command found but skipped (with --json, whose
    stdout holds the document alone)."""
    for s in skipped:
        err_console.print(f"skipped {s.run_dir}: {s.status or 'unreadable'}: {s.reason}",
                          markup=False, highlight=False)


def agent_help() -> str:
    """The --agent help, from the registry: built-ins and installed plug-ins alike."""
    import detente.builtins  # noqa: F401  (registers the built-ins, lazily)
    from detente.registry import MEDIATORS, PROVIDERS, STRATEGIES

    parties = ", ".join(f"scripted:{n}" for n in STRATEGIES.names())
    mediators = ", ".join(f"scripted:{n}" for n in MEDIATORS.names())
    providers = ", ".join(f"{n}:MODEL" for n in PROVIDERS.names())
    return (f"Who plays a party: a model name ({providers}), {parties} (parties), "
            f"{mediators} (mediator), or human (you, in the terminal); all=SPEC. "
            "'detente plugins' lists them all.")
