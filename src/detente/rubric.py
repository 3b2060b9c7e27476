"""The judge's rubric: a versioned YAML file of criteria, each with a question and a scale.

The shipped rubric is `detente/rubrics/judge-v1.yaml` (package data, in the wheel); `detente
judge --rubric FILE` takes another. A rubric's identity is its id, version and content hash
(SHA-256 of the validated rubric as canonical JSON), recorded with every judgement.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from detente.errors import InputError, Problem

DEFAULT_RUBRIC = "judge-v1.yaml"
KNOWN_CRITERIA: tuple[str, ...] = ("fidelity", "leakage", "consistency", "tone")
"""The criteria `detente compare` and the report aggregate (`detente.metrics`); a rubric may
define others, which are judged and written but not aggregated."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Criterion(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    applies_to: Literal["all", "voters"] = "all"
    """`voters`: only parties with private numbers and votes (not the mediator)."""
    question: str
    scale: dict[int, str]
    """Level to its description, worst (lowest) to best, consecutive integers."""

    @field_validator("scale")
    @classmethod
    def _levels(cls, scale: dict[int, str]) -> dict[int, str]:
        levels = sorted(scale)
        if len(levels) < 2 or len(levels) > 10:
            raise ValueError("a scale needs 2 to 10 levels")
        if levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"levels must be consecutive integers, got {levels}")
        if levels[0] < 0:
            raise ValueError("levels must not be negative")
        return {level: scale[level] for level in levels}

    @property
    def worst(self) -> int:
        return min(self.scale)

    @property
    def best(self) -> int:
        return max(self.scale)

    def applies(self, voter: bool) -> bool:
        return self.applies_to == "all" or voter


class Rubric(_Strict):
    format: Literal[1] = 1
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: int = Field(ge=1)
    title: str
    instructions: str
    criteria: list[Criterion] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Rubric:
        ids = [c.id for c in self.criteria]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"criterion ids must be unique; repeated: {', '.join(repeated)}")
        return self

    @property
    def content_hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True,
                               separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def for_party(self, voter: bool) -> list[Criterion]:
        return [c for c in self.criteria if c.applies(voter)]


def default_rubric_path() -> Path:
    return Path(str(resources.files("detente") / "rubrics" / DEFAULT_RUBRIC))


def load_rubric(path: str | Path | None = None) -> tuple[Rubric, Path]:
    """The rubric at `path` (default: the shipped one) and where it was read from. Read as the
    scenarios are (a regular file under the size cap, no duplicate keys or alias bombs)."""
    from detente.loading import load_yaml, validate_model

    where = Path(path) if path is not None else default_rubric_path()
    if not where.is_file():
        raise InputError(where, [Problem("", "no such rubric file")])
    return validate_model(Rubric, load_yaml(where), where), where
