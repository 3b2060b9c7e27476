"""What a sweep will cost, before anything is spent: `detente sweep --dry-run`.

For each scenario the estimate plays one run on paper, with the real protocol and the real prompt
builder, and no model: every round up to the round limit is played (no deal ends it early), and
every LLM turn's first request is built exactly as the run would send it, from a record that
grows as a real one does (the openings, then each round's proposal, answers and tally, with the
bounded context and the rejected packages the prompts show). Answers are typical ones: every
free-text field written to `TYPICAL_FILL` of its limit, every vote a rejection (so every round
is played), each answer objecting to half the issues. Tokens are counted as about four
characters each (`detente.costs.estimate_tokens`): what the answer's schema and the messages hold.
Seeds change no size, so a scenario's runs cost the same; the estimate is per run times seeds.

The estimate is one request per turn. Its upper bound (`*_max`) adds what a run can add: a
caucus reply every round the protocol allows one, two refused re-tablings per proposal, every
request corrected the endpoint's `validation_retries` times, the tool's follow-ups (assist
`tool`), and every completion at `max_tokens`. Nothing is sent, nothing is written, and no server
is started: LLM parties without an endpoint are estimated on the embedded model (free).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from detente.agents.schemas import ACCEPT
from detente.costs import (
    PriceTable,
    active_prices,
    estimate_prompt_tokens,
    estimate_tokens,
)
from detente.events import (
    EVERYONE,
    AgentSettings,
    IssueStance,
    Proposal,
    Response,
    Statement,
    Tally,
)
from detente.loading import ScenarioBundle
from detente.scenario import Package

TYPICAL_FILL = 0.5
"""The share of each free-text field's limit a typical answer writes."""
REFUSALS = 2
"""Refused re-tablings a proposal can take (`detente.protocols.engine.MAX_REFUSALS`)."""
VALIDATION_RETRIES = 2
"""Corrections a request can take (`detente.llm.EndpointConfig.validation_retries`)."""
TOOL_FOLLOW_UPS = 3
"""Requests the `evaluate_package` tool can add to a turn (assist `tool`)."""
FILLER = ("The delegation restates its position on each issue and asks the others to move "
          "toward a settlement that all of them can defend at home. ")
QUOTE_KEY = "0" * 32


# --------------------------------------------------------------------------- typical answers


def typical_answer(schema: Mapping[str, Any], pick: Any = None) -> Any:
    """A valid value of `schema` (a JSON schema, pydantic's or openai's strict one) as a
    typical answer writes it: strings at `TYPICAL_FILL` of their `maxLength` (prose), the
    choice `pick(path, values)` makes among enums (default: the first), numbers at their
    middle."""
    root = schema

    def resolve(node: Mapping[str, Any]) -> dict[str, Any]:
        node = dict(node)
        while "$ref" in node:
            ref = str(node.pop("$ref"))
            target: Any = root
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
            node = {**target, **node}
        return node

    def build(raw: Mapping[str, Any], path: tuple[str, ...]) -> Any:
        node = resolve(raw)
        if "enum" in node:
            values = list(node["enum"])
            return pick(path, values) if pick is not None else values[0]
        if "const" in node:
            return node["const"]
        for key in ("anyOf", "oneOf", "allOf"):
            if key in node:
                options = [o for o in node[key] if resolve(o).get("type") != "null"]
                return build(options[0], path) if options else None
        kind = node.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object" or "properties" in node:
            return {k: build(v, (*path, k)) for k, v in node.get("properties", {}).items()}
        if kind == "array":
            return [build(node["items"], (*path, "0")) for _ in range(node.get("minItems", 0))]
        if kind == "string":
            limit = node.get("maxLength")
            return filler(int(limit * TYPICAL_FILL)) if isinstance(limit, int) else filler(80)
        if kind in ("integer", "number"):
            low = node.get("minimum", 0)
            high = node.get("maximum", low)
            middle = (low + high) / 2
            return int(middle) if kind == "integer" else float(middle)
        if kind == "boolean":
            return False
        return None

    return build(schema, ())


def filler(chars: int) -> str:
    """English prose of exactly `chars` characters."""
    if chars <= 0:
        return ""
    text = FILLER * (chars // len(FILLER) + 1)
    return text[:chars].rstrip() + "." if chars > 1 else "."


# --------------------------------------------------------------------------- the estimate


class PartyEstimate(BaseModel):
    """One party's model calls in one run."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls_max: int = 0
    prompt_tokens_max: int = 0
    completion_tokens_max: int = 0
    model: str | None = None
    usd: float | None = 0.0
    """None: the model has no price (unknown)."""
    usd_max: float | None = 0.0


class ScenarioEstimate(BaseModel):
    """A scenario's runs (one per seed): calls, tokens and cost, estimated and at most."""

    scenario_id: str
    protocol: str
    rounds: int
    """Rounds played in the estimate: every one up to the limit."""
    runs: int
    calls: int
    """Model requests over all the runs (one per turn)."""
    calls_min: int
    """If every run ended in a deal in its first round."""
    calls_max: int
    prompt_tokens: int
    completion_tokens: int
    prompt_tokens_max: int
    completion_tokens_max: int
    usd: float | None
    """None: some model has no price."""
    usd_max: float | None
    unpriced: list[str] = []
    parties: dict[str, PartyEstimate]
    """Per run."""


class SweepEstimate(BaseModel):
    scenarios: list[ScenarioEstimate]
    price_source: str

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.scenarios)

    def total(self, key: str) -> int:
        return sum(int(getattr(s, key)) for s in self.scenarios)

    def usd(self, key: str = "usd") -> float | None:
        values = [getattr(s, key) for s in self.scenarios]
        return None if any(v is None for v in values) else float(sum(values))

    @property
    def unpriced(self) -> list[str]:
        return sorted({m for s in self.scenarios for m in s.unpriced})


@dataclass
class _Turn:
    party: str
    kind: str
    round: int
    prompt: int
    completion: int
    max_completion: int
    requests_max: int
    """Requests this turn can take at most (refusals, corrections, tool follow-ups)."""
    correction: int
    """Tokens a correction adds to the prompt (the rejected answer at max_tokens)."""


class _Paper:
    """One run played on paper: the record, the agents, and every LLM turn's size."""

    def __init__(self, bundle: ScenarioBundle, settings: Mapping[str, AgentSettings],
                 max_rounds: int, context_size: int) -> None:
        from detente.agents import endpoint_config, make_agent, private_view
        from detente.agents.llm_agent import LLMAgent
        from detente.llm import LLMClient
        from detente.protocols import protocol_for

        self.bundle = bundle
        self.scenario = bundle.scenario
        self.protocol = protocol_for(self.scenario)
        self.settings = settings
        self.max_rounds = max_rounds
        self.context_size = context_size
        self.events: list[dict[str, Any]] = []
        self.turns: list[_Turn] = []
        self.agents: dict[str, Any] = {}
        for party, s in settings.items():
            if s.kind == "llm":
                # The prompt builder of the real agent; its client sends nothing here.
                self.agents[party] = LLMAgent(
                    party, private_view(self.scenario, party), bundle.briefs[party], s,
                    LLMClient(endpoint_config(s)))
            else:
                self.agents[party] = make_agent(party, s, bundle)

    # ------------------------------------------------------------------ turns

    def context(self, party: str, state: dict[str, Any], stage: tuple[int, int, int],
                turn_id: str) -> Any:
        from detente.protocols.engine import before, build_context

        seen = before(self.events, stage, self.scenario.parties)
        view: Any = state
        return build_context(self.scenario, view, party, seen, self.context_size,
                             turn_id=turn_id, quote_key=QUOTE_KEY, talk=self.protocol.talk)

    def turn(self, party: str, kind: str, ctx: Any, round_: int, message: str = "") -> Any:
        """The turn's content: a typical answer for an LLM party (its request measured), the
        real strategy's for a scripted one."""
        agent = self.agents[party]
        settings = self.settings[party]
        if settings.kind != "llm":
            method = {"opening": agent.opening, "propose": agent.propose,
                      "respond": agent.respond}.get(kind)
            if kind == "caucus":
                return agent.caucus_reply(ctx, message).content
            assert method is not None
            return method(ctx).content
        body, model = agent.request(kind, ctx, message)
        answer = typical_answer(model.model_json_schema(), self._pick(party, kind, round_, ctx))
        text = json.dumps(answer)
        max_tokens = settings.max_tokens or 1024
        extra = REFUSALS if kind == "propose" else 0
        tools = TOOL_FOLLOW_UPS if body.get("tools") else 0
        self.turns.append(_Turn(
            party, kind, round_, estimate_prompt_tokens(body), estimate_tokens(len(text)),
            max_tokens, (1 + extra) * (1 + VALIDATION_RETRIES) + tools, max_tokens + 60))
        return agent.content(kind, ctx, model.model_validate(answer), text)

    def _pick(self, party: str, kind: str, round_: int, ctx: Any) -> Any:
        """Typical choices: a package that moves every round, a rejection, half the issues
        objected to, no caucus."""
        dims = [i.id for i in self.scenario.issues] + [t.id for t in self.scenario.terms]

        def pick(path: tuple[str, ...], values: list[Any]) -> Any:
            if path == ("vote",):
                return "reject"
            if path == ("caucus_with",):
                return "none"
            if len(path) == 3 and path[0] == "issues" and path[2] == "stance":
                return "object" if dims.index(path[1]) % 2 == 0 else "accept"
            if len(path) == 3 and path[0] == "issues" and path[2] == "wants":
                return values[(round_ + 1) % len(values)]
            if len(path) == 2 and path[0] == "issues":  # a compact stance
                wanted = [v for v in values if v != ACCEPT]
                return (wanted[(round_ + 1) % len(wanted)] if dims.index(path[1]) % 2 == 0
                        else ACCEPT)
            if len(path) == 2 and path[0] == "package":
                return values[(round_ + dims.index(path[1])) % len(values)]
            return values[0]

        return pick

    # ------------------------------------------------------------------ the record

    def play(self) -> None:
        from detente.protocols.alternating_offers import AlternatingOffers
        from detente.protocols.engine import OPENING

        for party in self.protocol.openers():
            ctx = self.context(party, self._state(0, None), (0, OPENING, 0), f"opening/{party}")
            content = self.turn(party, "opening", ctx, 0)
            self._log(Statement(id=f"opening/{party}", kind="opening", round=0, speaker=party,
                                text=content.text))
        last = self.protocol.total_rounds(self.max_rounds)
        if isinstance(self.protocol, AlternatingOffers):
            self._offers(self.protocol, last)
            return
        table: dict[str, Any] | None = None
        for round_ in range(1, last + 1):
            table = self._round(round_, table)

    def _state(self, round_: int, table: dict[str, Any] | None) -> dict[str, Any]:
        return {"round": round_, "max_rounds": self.max_rounds, "table": table,
                "deadlock_after": self.scenario.decision.deadlock_after, "seed": 0}

    def _log(self, event: BaseModel) -> None:
        self.events.append(event.model_dump(mode="json"))

    def _round(self, round_: int, table: dict[str, Any] | None) -> dict[str, Any]:
        from detente.protocols.engine import PROPOSAL, RESPONSE, snap

        protocol = self.protocol
        proposer = protocol.proposer(round_)
        ctx = self.context(proposer, self._state(round_, table), (round_, PROPOSAL, 0),
                           f"r{round_}/proposal")
        content = self.turn(proposer, "propose", ctx, round_)
        package = snap(self.scenario, content.package)
        visible = protocol.visible_to(round_)
        phase = protocol.phase(round_)
        self._log(Proposal(id=f"r{round_}/proposal", round=round_, speaker=proposer,
                           package=package, rationale=content.rationale if protocol.talk else "",
                           visible_to=visible, phase=phase))
        dumped = package.model_dump(mode="json")
        votes: dict[str, Any] = {}
        for party in protocol.answerers(round_):
            turn_id = f"r{round_}/response/{party}"
            ctx = self.context(party, self._state(round_, dumped), (round_, RESPONSE, 0), turn_id)
            answer = self.turn(party, "respond", ctx, round_)
            self._log(self._response(turn_id, round_, party, answer, visible, phase, 0))
            votes[party] = "reject"
        self._log(Tally(id=f"r{round_}/tally", round=round_, package=package, votes=votes,
                        accepted=False, rejections_of_package=1, visible_to=visible,
                        phase=phase))
        return dumped

    def _response(self, turn_id: str, round_: int, party: str, answer: Any,
                  visible: list[str] | str, phase: Any, slot: int) -> Response:
        stances = {k: IssueStance.model_validate(v.model_dump() if hasattr(v, "model_dump")
                                                 else v)
                   for k, v in (answer.stances or {}).items()}
        return Response(id=turn_id, round=round_, speaker=party, slot=slot,
                        visible_to=visible if visible != EVERYONE else EVERYONE,
                        phase=phase, vote="reject", stances=stances,
                        statement=answer.statement if self.protocol.talk else "",
                        private_rationale=answer.private_rationale,
                        value_estimate=answer.value_estimate)

    def _offers(self, protocol: Any, last: int) -> None:
        """Alternating offers: the first offer is asked for; each later one is the rejecting
        party's counter, made without a call. Each offer is answered by half the circle, the
        last of them rejecting."""
        from detente.protocols.engine import PROPOSAL, RESPONSE, snap
        from detente.protocols.offers_graph import counter_offer

        voters = protocol.voters
        proposer = voters[0]
        table: Package | None = None
        for round_ in range(1, last + 1):
            if table is None:
                ctx = self.context(proposer, self._state(round_ - 1, None), (round_, PROPOSAL, 0),
                                   f"r{round_}/proposal")
                table = snap(self.scenario, self.turn(proposer, "propose", ctx, round_).package)
            self._log(Proposal(id=f"r{round_}/proposal", round=round_, speaker=proposer,
                               package=table, rationale=""))
            order = protocol.circle_after(proposer)
            answering = order[: max(1, math.ceil(len(order) / 2))]
            for slot, party in enumerate(answering, start=1):
                turn_id = f"r{round_}/response/{party}"
                ctx = self.context(party, self._state(round_, table.model_dump(mode="json")),
                                   (round_, RESPONSE, slot), turn_id)
                answer = self.turn(party, "respond", ctx, round_)
                response = self._response(turn_id, round_, party, answer, EVERYONE, "plenary",
                                          slot)
                self._log(response)
            votes = {proposer: "accept", **{p: "reject" for p in answering}}
            self._log(Tally(id=f"r{round_}/tally", round=round_, package=table, votes=votes,
                            accepted=False, rejections_of_package=1))
            table = snap(self.scenario, counter_offer(table, response))
            proposer = answering[-1]

    # ------------------------------------------------------------------ the sums

    def caucus_turns(self) -> int:
        last = self.protocol.total_rounds(self.max_rounds)
        return sum(1 for r in range(1, last + 1) if self.protocol.caucus_allowed(r))


def estimate_scenario(bundle: ScenarioBundle, agents: Mapping[str, AgentSettings], runs: int,
                      rounds: int | None = None, prices: PriceTable | None = None,
                      context_size: int | None = None) -> ScenarioEstimate:
    """One scenario's runs (see the module's docstring)."""
    from detente.protocols.engine import DEFAULT_CONTEXT
    from detente.runner import effective_settings

    table = prices if prices is not None else active_prices()
    scenario = bundle.scenario
    settings = _on_paper(effective_settings({p: agents[p] for p in scenario.parties}, 0))
    max_rounds = rounds or scenario.decision.max_rounds
    paper = _Paper(bundle, settings, max_rounds,
                   context_size if context_size is not None else DEFAULT_CONTEXT)
    paper.play()
    parties: dict[str, PartyEstimate] = {}
    for party, s in settings.items():
        if s.kind != "llm":
            continue
        turns = [t for t in paper.turns if t.party == party]
        est = PartyEstimate(model=s.model)
        est.calls = len(turns)
        est.prompt_tokens = sum(t.prompt for t in turns)
        est.completion_tokens = sum(t.completion for t in turns)
        est.calls_max = sum(t.requests_max for t in turns)
        est.prompt_tokens_max = sum(t.requests_max * t.prompt
                                    + (t.requests_max - 1) * t.correction for t in turns)
        est.completion_tokens_max = sum(t.requests_max * t.max_completion for t in turns)
        parties[party] = est
    # A caucus reply each round it is allowed, at the size of that party's opening turn.
    mediator_rounds = paper.caucus_turns()
    voters = [p for p in parties if p in scenario.voters]
    if mediator_rounds and voters:
        for party in voters:
            est = parties[party]
            share = math.ceil(mediator_rounds / len(voters))
            opening = next((t for t in paper.turns if t.party == party), None)
            if opening is not None:
                est.calls_max += share * (1 + VALIDATION_RETRIES)
                est.prompt_tokens_max += share * (1 + VALIDATION_RETRIES) * opening.prompt
                est.completion_tokens_max += share * (1 + VALIDATION_RETRIES) * \
                    opening.max_completion
    unpriced: set[str] = set()
    for party, est in parties.items():
        price = table.for_agent(settings[party])
        if price is None:
            est.usd = est.usd_max = None
            unpriced.add(str(settings[party].model))
        else:
            est.usd = price.cost(est.prompt_tokens, est.completion_tokens)
            est.usd_max = price.cost(est.prompt_tokens_max, est.completion_tokens_max)
    first_round = sum(1 for t in paper.turns if t.round <= 1)

    def summed(key: str) -> int:
        return runs * sum(int(getattr(e, key)) for e in parties.values())

    def money(key: str) -> float | None:
        values = [getattr(e, key) for e in parties.values()]
        return None if any(v is None for v in values) else runs * float(sum(values))

    return ScenarioEstimate(
        scenario_id=scenario.id, protocol=paper.protocol.name,
        rounds=paper.protocol.total_rounds(max_rounds), runs=runs,
        calls=summed("calls"), calls_min=runs * first_round, calls_max=summed("calls_max"),
        prompt_tokens=summed("prompt_tokens"), completion_tokens=summed("completion_tokens"),
        prompt_tokens_max=summed("prompt_tokens_max"),
        completion_tokens_max=summed("completion_tokens_max"),
        usd=money("usd"), usd_max=money("usd_max"), unpriced=sorted(unpriced),
        parties=parties)


def _on_paper(settings: Mapping[str, AgentSettings]) -> dict[str, AgentSettings]:
    """The settings as a run would use them, without starting anything: LLM parties without an
    endpoint on the embedded model (see `detente.endpoints.on_embedded`)."""
    from detente.endpoints import embedded_parties, on_embedded

    out = dict(settings)
    local = embedded_parties(settings)
    if local:
        try:
            from detente.local_server import default_model_path

            gguf = default_model_path()
        except Exception:  # the [local] extra is missing: the name is all an estimate needs
            gguf = Path("embedded.gguf")
        for party in local:
            out[party] = on_embedded(out[party], gguf, None)
    return out


def estimate_sweep(bundles: Sequence[ScenarioBundle],
                   teams: Mapping[str, Mapping[str, AgentSettings]], seeds: int,
                   rounds: int | None = None, prices: PriceTable | None = None
                   ) -> SweepEstimate:
    """Every scenario's runs (`teams`: who plays, per scenario id)."""
    table = prices if prices is not None else active_prices()
    return SweepEstimate(
        scenarios=[estimate_scenario(b, teams[b.scenario.id], seeds, rounds, table)
                   for b in bundles],
        price_source=table.source)
