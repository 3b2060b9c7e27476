"""`detente leaderboard PATH...`: for each seat, the models and strategies that played it, ranked
by advantage (see `detente.leaderboard`), as a terminal table, JSON, CSV or an HTML page."""

from __future__ import annotations

import csv
import html
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from detente.cli._app import app, console, warn_skipped
from detente.errors import InputError, Problem
from detente.leaderboard import (
    COLUMNS,
    CSV_COLUMNS,
    LABELS,
    NOTES,
    Leaderboard,
    PlayerStats,
    csv_rows,
    load_leaderboard,
)
from detente.metrics import MeanCI, Proportion, metric


@app.command()
def leaderboard(
    paths: list[str] = typer.Argument(..., metavar="PATH...",
                                      help="Sweep folders, run folders or glob patterns."),
    seat: list[str] = typer.Option([], "--seat", metavar="PARTY",
                                   help="Only this seat (repeat for several; default: every "
                                        "voting seat)."),
    as_json: bool = typer.Option(False, "--json", help="Print the leaderboard as JSON."),
    csv_path: Path | None = typer.Option(None, "--csv", metavar="FILE",
                                         help="Also write one row per seat, player and figure "
                                              "(value, lo, hi, n)."),
    html_path: Path | None = typer.Option(None, "--html", metavar="FILE",
                                          help="Also write the tables as one HTML page."),
    prices: Path | None = typer.Option(
        None, "--prices", metavar="FILE",
        help="A price file over the shipped table, for the cost per run (see the README)."),
) -> None:
    """Rank the models and strategies that played each seat: advantage, deals, red lines, cost."""
    from detente.costs import prices_from

    with prices_from(prices):
        board = load_leaderboard(paths, seat)
    if csv_path is not None:
        write_csv(board, csv_path)
    if html_path is not None:
        write_html(board, html_path)
    if as_json:
        typer.echo(board.model_dump_json(indent=2))
        warn_skipped(board.skipped)
        return
    render(board)
    for what, path in (("CSV", csv_path), ("HTML", html_path)):
        if path is not None:
            console.print(f"{what}: {path}", markup=False, highlight=False, soft_wrap=True)


def cell(player: PlayerStats, key: str) -> str:
    """A figure as a terminal (and HTML) cell: a rate or a mean with its interval."""
    from detente.cli.compare import fmt_mean, fmt_rate

    stat = getattr(player, key)
    if isinstance(stat, Proportion):
        return fmt_rate(stat)
    if isinstance(stat, MeanCI):
        if key == "advantage":
            return fmt_mean(stat, lambda x: f"{x:.2f}")
        if key == "cost_per_run":
            return fmt_mean(stat, metric("cost_per_run").fmt)
        return fmt_mean(stat)
    return "-"


def _runs(p: PlayerStats) -> str:
    return str(p.runs) if p.runs == p.n else f"{p.runs} ({p.n} distinct)"


def render(board: Leaderboard, out: Console | None = None) -> None:
    from detente.cli.compare import Column, packed_tables

    out = out if out is not None else console
    seats = len(board.seats)
    out.print(f"{board.runs} finished runs; {seats} seat{'s' if seats != 1 else ''}",
              markup=False, highlight=False)
    if board.skipped:
        out.print(Text(f"skipped {len(board.skipped)} unfinished or unreadable runs",
                       style="yellow"))
    for seat in board.seats:
        out.print()
        players = seat.players
        labels = [f"{p.rank}{'' if p.established else '~'} {p.player}" for p in players]
        columns = [Column("runs", [Text(_runs(p)) for p in players])]
        columns += [Column(LABELS[key], [Text(cell(p, key)) for p in players])
                    for key in COLUMNS]
        for table in packed_tables(f"Seat: {seat.seat}", "rank, player", labels, columns,
                                   out.width):
            out.print(table)
    out.print()
    out.print(Text(NOTES, style="dim"))


def write_csv(board: Leaderboard, path: Path) -> None:
    try:
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in csv_rows(board):
                writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
    except OSError as exc:
        raise InputError(path, [Problem("--csv", f"cannot write: {exc.strerror}")]) from None


def html_page(board: Leaderboard) -> str:
    """One self-contained page: a table per seat (`table.seat[data-seat]`, rows
    `tr[data-player]`, cells `td[data-metric]`)."""
    e = html.escape
    parts = []
    for seat in board.seats:
        head = "".join(f"<th>{e(LABELS[k])}</th>" for k in COLUMNS)
        rows = "".join(
            f'<tr data-player="{e(p.player)}"><td>{p.rank}{"" if p.established else "~"}</td>'
            f"<th scope=\"row\">{e(p.player)}</th><td>{e(_runs(p))}</td>"
            + "".join(f'<td data-metric="{k}">{e(cell(p, k))}</td>' for k in COLUMNS)
            + "</tr>" for p in seat.players)
        parts.append(f'<h2>Seat: {e(seat.seat)}</h2><table class="seat" data-seat="'
                     f'{e(seat.seat)}"><thead><tr><th>rank</th><th>player</th><th>runs</th>'
                     f"{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;"
             "padding:.3em .6em;text-align:right}th[scope=row]{text-align:left}"
             ".note{color:#555;max-width:60em}")
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>detente leaderboard</title><style>{style}</style></head><body>"
            f"<h1>Leaderboard</h1><p>{board.runs} finished runs.</p>{''.join(parts)}"
            f'<p class="note">{e(NOTES)}</p></body></html>\n')


def write_html(board: Leaderboard, path: Path) -> None:
    try:
        path.write_text(html_page(board), encoding="utf-8")
    except OSError as exc:
        raise InputError(path, [Problem("--html", f"cannot write: {exc.strerror}")]) from None
