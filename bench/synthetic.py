"""Random scenarios of a chosen size, for benchmarks and property tests.

Two blocs of parties with opposed preferences make the space look like a negotiation:
anti-correlated utilities give a large Pareto frontier, the hard case for the analysis.
"""

from __future__ import annotations

import numpy as np

from detente.scenario import Scenario


def synthetic_scenario(
    n_issues: int, options_per_issue: int, n_parties: int = 4, *, seed: int = 0,
    term_values: int = 0,
) -> Scenario:
    rng = np.random.default_rng(seed)
    parties = [f"p{k}" for k in range(n_parties)]
    issues = [
        {
            "id": f"i{k}",
            "label": f"Issue {k}",
            "description": "synthetic",
            "options": [
                {"id": f"o{j}", "label": f"Option {j}", "description": "synthetic"}
                for j in range(options_per_issue)
            ],
        }
        for k in range(n_issues)
    ]
    terms = []
    if term_values:
        terms.append({"id": "t0", "label": "Term", "description": "synthetic", "unit": "units",
                      "min": 0, "max": term_values - 1, "step": 1})
    preferences = {}
    for k, party in enumerate(parties):
        direction = 1 if k % 2 == 0 else -1
        ladder = np.linspace(0, 100, options_per_issue)[::direction]
        utilities = {
            f"i{i}": {
                f"o{j}": float(np.clip(ladder[j] + rng.normal(0, 15), 0, 100))
                for j in range(options_per_issue)
            }
            for i in range(n_issues)
        }
        dims = [f"i{i}" for i in range(n_issues)] + [t["id"] for t in terms]
        raw = rng.dirichlet(np.ones(len(dims)))
        weights = {d: float(w) for d, w in zip(dims, raw, strict=True)}
        # Make them sum to exactly 1 in floating point.
        weights[dims[-1]] = 1.0 - sum(weights[d] for d in dims[:-1])
        prefs: dict[str, object] = {
            "weights": weights,
            "utilities": utilities,
            "reservation_utility": 35.0,
            "red_lines": [
                {"id": "worst", "description": "never the other side's maximum",
                 "kind": "forbid", "issue": "i0",
                 "options": [f"o{options_per_issue - 1 if direction == 1 else 0}"]}
            ],
        }
        if terms:
            end = term_values - 1
            prefs["term_utilities"] = {"t0": [[0, 100.0], [end, 0.0]][::1] if direction == 1
                                       else [[0, 0.0], [end, 100.0]]}
        preferences[party] = prefs
    return Scenario.model_validate({
        "id": "synthetic",
        "title": "Synthetic",
        "description": "A random scenario for benchmarks",
        "parties": [*parties, "mediator"],
        "mediator": "mediator",
        "issues": issues,
        "terms": terms,
        "preferences": preferences,
        "decision": {"required": parties, "max_rounds": 5},
    })
