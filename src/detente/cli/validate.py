"""`detente validate PATH...`: check scenario and agent brief files."""

from __future__ import annotations

from pathlib import Path

import typer

from detente.cli._app import app, console, err_console
from detente.errors import DetenteError, InputError, Problem


def _expand(paths: list[Path]) -> list[Path]:
    from detente.sources import iter_yaml

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = list(iter_yaml([path]))
            if not found:
                raise InputError(path, [Problem("", "no .yaml files in this folder")])
            files += found
        else:
            files.append(path)
    return files


@app.command()
def validate(
    paths: list[Path] = typer.Argument(
        ..., help="Scenario or brief files, or folders of them (searched recursively)."),
) -> None:
    """Check scenario and agent brief files; exit 2 if any is invalid.

    Besides the structure and cross-references, every claim needs a source tag, and a brief
    whose option links contradict the party's utilities in the scenario (a rejected option that
    scores at or above a preferred one, or that the party would accept in the zone of agreement)
    fails its scenario.
    """
    # The scenario models load with the command, not with every --help.
    from detente.consistency import contradictions
    from detente.loading import classify, load_brief, load_bundle, load_yaml
    from detente.sources import raise_located

    failed = 0
    files = _expand(paths)
    for file in files:
        try:
            data = load_yaml(file)
            kind = classify(data)
            if kind == "design":
                from detente.designs import load_design

                design = load_design(file)
                cells = 1
                for levels in design.factors.values():
                    cells *= len(levels)
                summary = (f"design: {len(design.scenarios)} scenario paths x {cells} "
                           f"combinations of {', '.join(design.factors) or 'no factor'} x "
                           f"{len(design.seeds)} seeds")
            elif kind == "scenario":
                bundle = load_bundle(file)
                raise_located(contradictions(bundle))
                s = bundle.scenario
                terms = len(s.terms)
                summary = (f"scenario '{s.id}': {len(s.parties)} parties, {len(s.issues)} "
                           f"issues, {terms} numeric term{'' if terms == 1 else 's'}")
            else:
                brief = load_brief(file)
                summary = f"brief '{brief.id}' ({brief.role})"
        except DetenteError as exc:
            failed += 1
            err_console.print(f"✗ {exc}", markup=False, highlight=False, soft_wrap=True)
            continue
        console.print(f"✓ {file}  {summary}", markup=False, highlight=False, soft_wrap=True)
    if failed:
        err_console.print(f"{failed} of {len(files)} files invalid", markup=False)
        raise typer.Exit(2)
