"""A person's turns in the terminal: what the seat sees, then one prompt per field.

Every answer is checked as it is typed (an option of that issue, a term value on its grid, a
party to take aside); `quit` at any prompt, or end of input (Ctrl-D), pauses the run at this
turn, to be asked again by `detente run --resume RUN`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from detente.agents.human import HumanRequest
from detente.scenario import Scenario

QUIT = "quit"


class _Quit(Exception):
    pass


class TerminalHuman:
    """Answers human turns on a console (stopping a live display while the person types)."""

    def __init__(self, console: Console, pause: Callable[[], None] | None = None,
                 resume: Callable[[], None] | None = None) -> None:
        self.console = console
        self.pause = pause
        self.resume = resume

    def __call__(self, request: HumanRequest, scenario: Scenario) -> Mapping[str, Any] | None:
        if self.pause is not None:
            self.pause()
        try:
            return self._ask(request, scenario)
        except _Quit:
            return None
        finally:
            if self.resume is not None:
                self.resume()

    # ------------------------------------------------------------------ prompts

    def _ask(self, request: HumanRequest, scenario: Scenario) -> dict[str, Any]:
        title = {"opening": "your opening statement", "propose": "your package",
                 "respond": "your answer to the package on the table",
                 "caucus_reply": "your reply in caucus"}[request.kind]
        self.console.print(Panel(Text(request.view), title=f"{request.party}: {title}",
                                 subtitle=f"type '{QUIT}' at any prompt to pause the run"))
        if request.problem:
            self.console.print(Text(f"Your last answer was not accepted: {request.problem}",
                                    style="red"))
        if request.kind in ("opening", "caucus_reply"):
            return {"text": self._text("Your words", required=True)}
        if request.kind == "respond":
            return self._respond(request, scenario)
        return self._propose(request, scenario)

    def _respond(self, request: HumanRequest, scenario: Scenario) -> dict[str, Any]:
        table = request.table or {"options": {}, "terms": {}}
        vote = self._choice("Your vote", ["accept", "reject"])
        stances: dict[str, dict[str, Any]] = {}
        for issue in scenario.issues:
            current = table["options"].get(issue.id)
            stance = self._choice(f"{issue.id} (on the table: {current}): accept or object",
                                  ["accept", "object"])
            wants: Any = None
            if stance == "object":
                others = [o for o in issue.option_ids() if o != current]
                wants = self._choice(f"{issue.id}: the option you want instead", others,
                                     allow_none=True)
            stances[issue.id] = {"stance": stance, "wants": wants}
        for term in scenario.terms:
            current = table["terms"].get(term.id)
            stance = self._choice(f"{term.id} (on the table: {current:g} {term.unit}): accept or "
                                  "object", ["accept", "object"])
            wants = None
            if stance == "object":
                wants = self._number(f"{term.id}: the value you want instead ({term.min:g} to "
                                     f"{term.max:g}, steps of {term.step:g}; empty for none)",
                                     term.min, term.max, term.step, allow_none=True)
            stances[term.id] = {"stance": stance, "wants": wants}
        return {"vote": vote, "stances": stances,
                "statement": self._text("Your public statement (every party sees it)"),
                "private_rationale": self._text("Your private note (no one else sees it)")}

    def _propose(self, request: HumanRequest, scenario: Scenario) -> dict[str, Any]:
        table = request.table or {"options": {}, "terms": {}}
        options = {issue.id: self._choice(f"{issue.id}", issue.option_ids(),
                                          default=table["options"].get(issue.id))
                   for issue in scenario.issues}
        terms = {term.id: self._number(f"{term.id} ({term.min:g} to {term.max:g} {term.unit}, "
                                       f"steps of {term.step:g})", term.min, term.max,
                                       term.step, default=table["terms"].get(term.id))
                 for term in scenario.terms}
        rationale = self._text("Why this package (every party sees it)")
        partners = [p for p in scenario.voters if p != request.party]
        caucus_with = self._choice("Take a party aside for a private caucus", partners,
                                   allow_none=True)
        message = self._text(f"What you tell {caucus_with} in private") if caucus_with else ""
        return {"package": {"options": options, "terms": terms}, "rationale": rationale,
                "caucus_with": caucus_with, "caucus_message": message}

    # ------------------------------------------------------------------ fields

    def _input(self, prompt: str) -> str:
        try:
            value = self.console.input(Text(f"{prompt}: "))
        except EOFError:
            raise _Quit from None
        if value.strip().lower() == QUIT:
            raise _Quit
        return value.strip()

    def _text(self, prompt: str, required: bool = False) -> str:
        while True:
            value = self._input(prompt)
            if value or not required:
                return value
            self.console.print("Say something (or 'quit').", markup=False)

    def _choice(self, prompt: str, options: Sequence[str], default: str | None = None,
                allow_none: bool = False) -> Any:
        listing = "  ".join(f"{k}) {o}" for k, o in enumerate(options, start=1))
        hint = f" [{default}]" if default else (" [empty: none]" if allow_none else "")
        while True:
            self.console.print(Text(f"  {listing}"))
            value = self._input(f"{prompt}{hint}")
            if not value:
                if default:
                    return default
                if allow_none:
                    return None
            elif value in options:
                return value
            elif value.isdigit() and 1 <= int(value) <= len(options):
                return options[int(value) - 1]
            self.console.print(Text(f"Expected a number from 1 to {len(options)} or one of: "
                                    f"{', '.join(options)}.", style="red"))

    def _number(self, prompt: str, low: float, high: float, step: float,
                default: float | None = None, allow_none: bool = False) -> float | None:
        hint = f" [{default:g}]" if default is not None else ""
        while True:
            value = self._input(f"{prompt}{hint}")
            if not value:
                if default is not None:
                    return default
                if allow_none:
                    return None
            else:
                try:
                    number = float(value)
                except ValueError:
                    number = float("nan")
                steps = (number - low) / step
                if low <= number <= high and abs(steps - round(steps)) < 1e-9:
                    return number
            self.console.print(Text(f"Expected a number from {low:g} to {high:g} in steps of "
                                    f"{step:g}.", style="red"))
