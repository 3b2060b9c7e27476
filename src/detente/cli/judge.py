"""`detente judge RUN_OR_SWEEP...`: a model judges every party's words; a check finds leaks."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer
from rich.table import Table
from rich.text import Text

from detente.cli._app import app, console, err_console
from detente.cli._endpoints import terminate_as_interrupt

if TYPE_CHECKING:
    from detente.judge import RunJudged
    from detente.judgements import Judgement, LeakCheck



class Mode(StrEnum):
    json_schema = "json_schema"
    json_object = "json_object"
    prompt = "prompt"


class Answers(StrEnum):
    quote = "quote"
    choose = "choose"

_MARK = {"verified": "✓", "elsewhere": "✓ (in another item)", "unverified": "✗ not found",
         "too_short": "✗ too short"}


@app.command()
def judge(
    paths: list[Path] = typer.Argument(..., metavar="RUN_OR_SWEEP...",
                                       help="Run folders, sweep folders or glob patterns."),
    model: str | None = typer.Option(
        None, "--model", help="The judge's model (default: the embedded SmolLM2-135M, a weak "
                              "judge); with --base-url, the model id that endpoint serves."),
    base_url: str | None = typer.Option(
        None, "--base-url", help="An OpenAI-compatible endpoint for the judge."),
    model_path: Path | None = typer.Option(
        None, "--model-path", help="Serve this GGUF file as the judge (embedded server)."),
    rubric: Path | None = typer.Option(
        None, "--rubric", help="A rubric file (default: the shipped detente/rubrics/"
                               "judge-v1.yaml)."),
    deterministic_only: bool = typer.Option(
        False, "--deterministic-only", help="Only the leak check, which needs no model."),
    party: list[str] = typer.Option([], "--party", help="Judge this party only (repeatable)."),
    rounds: str | None = typer.Option(
        None, "--rounds", metavar="FIRST-LAST",
        help="The model judges only the words of these rounds (e.g. 3-3 or 1-4; openings are "
             "round 0). The leak check always reads the whole run."),
    force: bool = typer.Option(
        False, "--force", help="Judge again the windows this judge already judged, replacing "
                               "its judgements (by default they are kept and skipped)."),
    structured_mode: Mode | None = typer.Option(
        None, "--structured-mode",
        help="json_schema (default), json_object (the embedded model's default), prompt."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, max=2.0),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", min=1,
        help="The judge's answer limit (default 700 with --answers choose, 1600 with quote)."),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0.001, metavar="SECONDS",
        help="Seconds a judge request may take (default 60; 600 on the embedded model)."),
    window_chars: int = typer.Option(
        2000, "--window-chars", min=200,
        help="Characters of a party's words per judge request (whole rounds)."),
    answers: Answers | None = typer.Option(
        None, "--answers",
        help="quote: the judge copies its evidence quotes (checked afterwards; the default on "
             "an endpoint); choose: it picks them among the party's sentences (the default on "
             "the embedded model, which cannot quote)."),
    scenario: Path | None = typer.Option(None, "--scenario",
                                         help="The runs' scenario, if it has moved."),
    log_prompts: bool = typer.Option(
        True, "--log-prompts/--no-log-prompts",
        help="Keep every judge request and raw response in the run's judge-prompts.jsonl."),
    evidence: bool = typer.Option(False, "--evidence",
                                  help="Print every evidence quote and whether it was found."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print the records of each run as JSON lines."),
) -> None:
    """Judge every party's words against a rubric, and find private numbers said in public.

    Writes judgements.jsonl in each run folder: the deterministic leak check of every voting
    party (no model), and, unless --deterministic-only, a model's scores per party and window
    of rounds with evidence quotes checked against the party's words. The same judge run again
    skips what it already judged (--force replaces it); other judges' lines are kept.
    """
    from detente.judge import judge_runs

    span = _rounds(rounds) if rounds is not None else None

    def notice(text: str) -> None:
        err_console.print(text, markup=False, highlight=False, style="dim")

    def show(judged: RunJudged) -> None:
        if as_json:
            from detente.judgements import as_json as record_json

            records: list[LeakCheck | Judgement] = [*judged.leak_checks, *judged.judgements]
            for record in records:
                console.print(json.dumps(record_json(record), ensure_ascii=False),
                              markup=False, highlight=False, soft_wrap=True)
            return
        render(judged, evidence)

    with terminate_as_interrupt():
        judge_runs(paths, model=model, base_url=base_url, model_path=model_path, rubric=rubric,
                   deterministic_only=deterministic_only, parties=party or None, rounds=span,
                   force=force,
                   temperature=temperature, max_tokens=max_tokens, timeout=timeout,
                   structured_mode=cast(Any, structured_mode.value if structured_mode else None),
                   window_chars=window_chars,
                   answers=cast(Any, answers.value if answers else None), scenario=scenario,
                   log_prompts=log_prompts,
                   notice=notice, on_run=show)


def _rounds(text: str) -> tuple[int, int]:
    from detente.errors import InputError, Problem

    first, dash, last = text.strip().partition("-")
    try:
        span = (int(first), int(last) if dash else int(first))
    except ValueError:
        span = (-1, -1)
    if span[0] < 0 or span[1] < span[0]:
        raise InputError("--rounds", [Problem(text, "expected FIRST-LAST, two round numbers "
                                              "(0 or more) in order, e.g. 1-3, or one round")])
    return span


def render(judged: RunJudged, evidence: bool = False) -> None:
    out = console
    out.print(Text(f"{judged.path} (run {judged.run_id})", style="bold"))
    hits = [(c.party, h) for c in judged.leak_checks for h in c.hits]
    parties = len(judged.leak_checks)
    out.print(f"Leak check (deterministic, no model): {len(hits)} hit(s) in the words of "
              f"{parties} voting part{'y' if parties == 1 else 'ies'}.", highlight=False)
    for party, hit in hits:
        what = "; ".join(f"{r.label} ({r.shown})" for r in hit.reveals)
        out.print(Text(f"  {party}, round {hit.round}, {hit.where}: {hit.number} reveals "
                       f"{what}"), soft_wrap=True)
        out.print(Text(f"    \u201c{hit.quote}\u201d", style="dim"), soft_wrap=True)
    judgements = judged.judgements
    if not judgements:
        out.print(f"Written: {judged.file}", highlight=False)
        out.print()
        return
    first = judgements[0]
    j = first.judge
    where = f"{j.model} (embedded)" if j.local_model else j.model
    out.print(f"Judge {where}, rubric {first.rubric.id} v{first.rubric.version} "
              f"({first.rubric.hash[:12]}): {len(judgements)} judgement(s), {judged.written} "
              f"new, {judged.skipped} kept from before.", highlight=False)
    criteria = list(dict.fromkeys(c for x in judgements for c in x.scale))
    table = Table(show_edge=False)
    table.add_column("party")
    table.add_column("rounds")
    for c in criteria:
        table.add_column(c, justify="right")
    table.add_column("evidence found", justify="right")
    table.add_column("contradictions", justify="right")
    table.add_column("leaks claimed (confirmed)", justify="right")
    for x in judgements:
        rounds = f"{x.rounds[0]}" if x.rounds[0] == x.rounds[1] else f"{x.rounds[0]}-{x.rounds[1]}"
        if x.invalid:
            table.add_row(x.party, rounds, *["-" for _ in criteria],
                          Text("no valid answer", style="red"), "", "")
            continue
        scores = [f"{x.scores[c]}/{x.scale[c][1]}" if c in x.scores else "n/a"
                  for c in criteria]
        found = sum(e.counts for e in x.evidence)
        flagged = sum(c.verified for c in x.contradictions)
        confirmed = sum(c.confirmed for c in x.leak_claims)
        table.add_row(x.party, rounds, *scores, f"{found}/{len(x.evidence)}",
                      f"{flagged}/{len(x.contradictions)}" if x.contradictions else "0",
                      f"{len(x.leak_claims)} ({confirmed})")
    out.print(table)
    out.print(Text("Evidence found: quotes found in the party's words, of those given (the "
                   "others are marked unverified and count for nothing). Contradictions: "
                   "flagged with both quotes found, of those claimed.", style="dim"))
    for x in judgements:
        _details(x, evidence)
    out.print(f"Written: {judged.file}", highlight=False)
    out.print()


def _details(x: Judgement, evidence: bool) -> None:
    out = console
    for c in x.contradictions:
        if c.verified:
            out.print(Text(f"  {x.party}: says in public ({c.public_ref}) "
                           f"\u201c{c.public_quote}\u201d, but ({c.private_ref}) "
                           f"\u201c{c.private_quote}\u201d: {c.explanation}"), soft_wrap=True)
    for claim in x.leak_claims:
        if claim.confirmed:
            what = "; ".join(f"{n.label} ({n.shown})" for n in claim.numbers)
            out.print(Text(f"  {x.party}: leak confirmed ({claim.ref}) \u201c{claim.quote}\u201d:"
                           f" {what}"), soft_wrap=True)
    if not evidence:
        return
    if x.summary:
        out.print(Text(f"  {x.party}, rounds {x.rounds[0]}-{x.rounds[1]}: {x.summary}",
                       style="italic"), soft_wrap=True)
    for e in x.evidence:
        mark = _MARK[e.status] + (f" {e.found_in}" if e.found_in else "")
        out.print(Text(f"    {e.criterion} {e.ref} [{mark}] \u201c{e.quote}\u201d"
                       + (f": {e.note}" if e.note else "")), soft_wrap=True)
