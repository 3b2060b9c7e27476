"""detente's own strategies, mediators, protocols and providers, registered by import path.

Registered exactly as a plug-in registers its own (see `detente.registry`), but lazily: this
module imports nothing heavy, and each built-in loads the first time it is used.
"""

from __future__ import annotations

from detente.registry import MEDIATORS, PROTOCOLS, PROVIDERS, STRATEGIES

for _name, _what in (
    ("boulware", "holds near its ideal and concedes only at the end (Faratin e = 0.2)"),
    ("linear", "lowers its aspiration evenly from its ideal to its walk-away (e = 1)"),
    ("conceder", "concedes most of the way early on (e = 5)"),
):
    STRATEGIES.lazy(_name, f"detente.agents.scripted:make_{_name}", _what)
STRATEGIES.lazy("saboteur", "detente.agents.scripted:make_saboteur",
                "talks and concedes like Conceder, but rejects, with a hard bargainer's "
                "objections, any package its acceptance could pass: makes the talks fail "
                "without being seen to")

MEDIATORS.lazy("nash", "detente.agents.scripted:make_nash",
               "tables the Nash product maximum of the parties' stated positions")
MEDIATORS.lazy("snt", "detente.agents.scripted:make_snt",
               "revises a single negotiating text toward majority objections (Raiffa)")
MEDIATORS.lazy("oracle", "detente.agents.scripted:make_oracle",
               "knows every party's utilities and tables the Nash package of the zone of "
               "agreement: an upper bound, not a negotiation", sees_all=True)

for _module, _class, _what in (
    ("mediated", "Mediated", "a mediator tables a package each round and may caucus with one "
     "party; every party answers at once"),
    ("rotating", "Rotating", "the voting parties take turns tabling a package; every party "
     "answers at once"),
    ("no_talk", "NoTalk", "packages and votes only: no openings, statements, rationales or "
     "caucuses"),
    ("alternating_offers", "AlternatingOffers", "parties in a circle accept the offer on the "
     "table or counter it with a whole package (stacked alternating offers)"),
    ("bilateral_first", "BilateralFirst", "two named parties negotiate privately for some "
     "rounds, then the plenary starts from what they agreed"),
):
    PROTOCOLS.lazy(_module, f"detente.protocols.{_module}:{_class}", _what)

PROVIDERS.lazy("openai", "detente.providers:openai_agent",
               "any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, Ollama, "
               "llama.cpp's server, the embedded model)")
