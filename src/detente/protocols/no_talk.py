"""`no_talk`: packages and votes only, no statements: does talk matter?"""

from __future__ import annotations

from detente.protocols.base import Protocol
from detente.registry import PROTOCOLS


@PROTOCOLS.register("no_talk", description="packages and votes only: no openings, statements, "
                    "rationales or caucuses")
class NoTalk(Protocol):
    """The mediated (or, without a mediator, rotating) procedure with every word taken out.

    Reproductions of LLM negotiation benchmarks found this baseline necessary to tell whether
    what the agents say changes what they agree: the parties still see every package, every
    vote and the options each party asked for, but no text.
    """

    name = "no_talk"
    talk = False
    description = ("the mediator (or the parties in turn) tables packages and the parties vote, "
                   "objecting issue by issue, with no words: no openings, statements, "
                   "rationales or caucuses")
