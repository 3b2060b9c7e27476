"""Scripted agents: concession curves, red lines, counter-packages and the two mediators.

Run on tests/data/tiny (small enough to brute-force: 3 x 2 x 3 = 18 packages) and on the
baseline scenario (97,500 packages). Every agent is built from a `private_view`, which holds only
its own party's preferences (none for the mediator), so nothing here could pass if an agent
needed another party's preferences.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

import pytest

from detente.agents.base import Context, private_view
from detente.agents.scripted import (
    NASH_EPSILON,
    NashMediator,
    SingleTextMediator,
    TimeDependentNegotiator,
    make_scripted,
)
from detente.analysis import analyze
from detente.events import IssueStance, Usage
from detente.loading import load_scenario
from detente.registry import MEDIATORS, STRATEGIES
from detente.scenario import Package, Scenario

ROOT = Path(__file__).parent.parent
TINY = Path(__file__).parent / "data" / "tiny" / "scenario.yaml"
BASELINE = ROOT / "scenarios" / "baseline.yaml"
NEGOTIATORS = ("boulware", "linear", "conceder")


@pytest.fixture(scope="module")
def tiny() -> Scenario:
    return load_scenario(TINY)


@pytest.fixture(scope="module")
def baseline() -> Scenario:
    return load_scenario(BASELINE)


@pytest.fixture(scope="module")
def baseline_agents(baseline: Scenario) -> dict[tuple[str, str], TimeDependentNegotiator]:
    return {
        (party, strategy): TimeDependentNegotiator(party, private_view(baseline, party), strategy)
        for party in baseline.voters
        for strategy in NEGOTIATORS
    }


def negotiator(scenario: Scenario, party: str, strategy: str) -> TimeDependentNegotiator:
    return TimeDependentNegotiator(party, private_view(scenario, party), strategy)


def ctx(
    party: str,
    round: int,
    max_rounds: int,
    table: Package | None = None,
    positions: dict[str, dict[str, IssueStance]] | None = None,
    last_votes: dict[str, str] | None = None,
    rejected: list[Package] | None = None,
) -> Context:
    return Context(
        party=party, round=round, max_rounds=max_rounds, table=table, statements=[],
        own_positions=[], caucus=[], positions=positions or {},
        last_votes=last_votes or {},  # type: ignore[arg-type]
        rejected=rejected or [],
    )


def pkg(x: str, y: str, t: float) -> Package:
    return Package(options={"x": x, "y": y}, terms={"t": t})


def all_tiny() -> list[Package]:
    return [pkg(x, y, t) for x, y, t in itertools.product(
        ["x1", "x2", "x3"], ["y1", "y2"], [0.0, 5.0, 10.0])]


def accept() -> IssueStance:
    return IssueStance(stance="accept")


def obj(wants: str | float) -> IssueStance:
    return IssueStance(stance="object", wants=wants)


def changes(a: Package, b: Package) -> int:
    return sum(a.options[k] != b.options[k] for k in a.options) + sum(
        abs(a.terms[k] - b.terms[k]) > 1e-9 for k in a.terms)


# --------------------------------------------------------------------------- private views


def test_agents_are_built_from_a_private_view_alone(tiny: Scenario, baseline: Scenario) -> None:
    for scenario in (tiny, baseline):
        for party in scenario.voters:
            view = private_view(scenario, party)
            assert list(view.preferences) == [party]
            agent = make_scripted("linear", party, view)
            assert agent.party == party
        assert scenario.mediator is not None
        mediator_view = private_view(scenario, scenario.mediator)
        assert mediator_view.preferences == {}
        for strategy in ("nash", "snt"):
            make_scripted(strategy, scenario.mediator, mediator_view)


def test_other_parties_preferences_change_nothing(tiny: Scenario) -> None:
    full = TimeDependentNegotiator("a", tiny, "linear")
    own = negotiator(tiny, "a", "linear")
    for table in all_tiny():
        for round in (1, 3):
            assert full.respond(ctx("a", round, 4, table)).content == \
                own.respond(ctx("a", round, 4, table)).content


# --------------------------------------------------------------------------- concession


def test_boulware_concedes_slower_than_linear_slower_than_conceder(
    baseline: Scenario, baseline_agents: dict[tuple[str, str], TimeDependentNegotiator]
) -> None:
    max_rounds = baseline.decision.max_rounds
    for party in baseline.voters:
        b, lin, c = (baseline_agents[party, s] for s in NEGOTIATORS)
        reservation = baseline.preferences[party].reservation_utility
        assert b.best_utility > reservation
        for agent in (b, lin, c):
            assert agent.aspiration(1, max_rounds) == pytest.approx(agent.best_utility)
            assert agent.aspiration(max_rounds, max_rounds) == pytest.approx(reservation)
            assert agent.aspiration(1, 1) == pytest.approx(reservation)  # T = 0: t/T = 1
        for round in range(2, max_rounds):
            assert b.aspiration(round, max_rounds) > lin.aspiration(round, max_rounds) > \
                c.aspiration(round, max_rounds)
        curve = [lin.aspiration(r, max_rounds) for r in range(1, max_rounds + 1)]
        assert curve == sorted(curve, reverse=True)


def test_acceptance_of_a_fixed_package_comes_first_for_the_conceder(tiny: Scenario) -> None:
    # a values x2,y1,t5 at 25 + 30 + 10 = 65: between its reservation (40) and its best (100).
    table = pkg("x2", "y1", 5.0)
    first_accept = {}
    for strategy in NEGOTIATORS:
        agent = negotiator(tiny, "a", strategy)
        assert agent.utility(table) == pytest.approx(65)
        votes = [agent.respond(ctx("a", r, 4, table)).content.vote for r in range(1, 5)]
        first_accept[strategy] = votes.index("accept") + 1
        assert all(v == "accept" for v in votes[first_accept[strategy] - 1:])
    assert first_accept == {"conceder": 2, "linear": 3, "boulware": 4}


def test_every_strategy_accepts_a_zopa_package_at_the_last_round(
    baseline: Scenario, baseline_agents: dict[tuple[str, str], TimeDependentNegotiator]
) -> None:
    report = analyze(baseline, frontier=False)
    assert report.nash is not None
    nash = report.nash.package
    last = baseline.decision.max_rounds
    for (party, _), agent in baseline_agents.items():
        assert agent.respond(ctx(party, last, last, nash)).content.vote == "accept"
    # ... but not all of them in the first round: they start at their ideal.
    first = [a.respond(ctx(p, 1, last, nash)).content.vote for (p, _), a in
             baseline_agents.items()]
    assert "reject" in first


def test_no_agent_accepts_a_package_breaking_its_own_red_line(
    tiny: Scenario, baseline: Scenario,
    baseline_agents: dict[tuple[str, str], TimeDependentNegotiator],
) -> None:
    # a forbids x3; x3,y1,t10 is still worth 0 + 30 + 20 = 50 to it, above its reservation.
    table = pkg("x3", "y1", 10.0)
    for strategy in NEGOTIATORS:
        agent = negotiator(tiny, "a", strategy)
        assert agent.utility(table) > agent.reservation
        for r in range(1, 5):
            answer = agent.respond(ctx("a", r, 4, table)).content
            assert answer.vote == "reject"
            assert answer.stances["x"].stance == "object"
            assert answer.stances["x"].wants != "x3"
    # Ukraine's best package but with a 90 thousand army: breaks `army_able_to_defend`.
    table = Package(
        options={"territory": "return_to_2022_lines", "dmz_peacekeepers": "european_force",
                 "demilitarization": "no_restrictions", "sanctions": "no_relief",
                 "security_architecture": "nato_path_open"},
        terms={"army_ceiling": 90.0},
    )
    last = baseline.decision.max_rounds
    for strategy in NEGOTIATORS:
        agent = baseline_agents["ukraine", strategy]
        assert agent.broken_red_lines(table) == ["army_able_to_defend"]
        for r in range(1, last + 1):
            answer = agent.respond(ctx("ukraine", r, last, table)).content
            assert answer.vote == "reject"
            wants = answer.stances["army_ceiling"].wants
            assert isinstance(wants, float)
            assert wants >= 100
            assert [d for d, s in answer.stances.items() if s.stance == "object"] == \
                ["army_ceiling"]


# --------------------------------------------------------------------------- counter-packages


def apply_stances(table: Package, stances: dict[str, IssueStance]) -> Package:
    options = {k: str(stances[k].wants) if stances[k].stance == "object" else v
               for k, v in table.options.items()}
    terms = {k: float(stances[k].wants) if stances[k].stance == "object" else v  # type: ignore[arg-type]
             for k, v in table.terms.items()}
    return Package(options=options, terms=terms)


def test_counter_package_is_the_nearest_acceptable_one_brute_force(tiny: Scenario) -> None:
    packages = all_tiny()
    for party in tiny.voters:
        for strategy in NEGOTIATORS:
            agent = negotiator(tiny, party, strategy)
            acceptable = {
                r: [p for p in packages if agent.utility(p) >= agent.aspiration(r, 4) - 1e-9
                    and not agent.broken_red_lines(p)]
                for r in range(1, 5)
            }
            for r, table in itertools.product(range(1, 5), packages):
                answer = agent.respond(ctx(party, r, 4, table)).content
                assert set(answer.stances) == {"x", "y", "t"}
                if answer.vote == "accept":
                    assert table in acceptable[r]
                    assert all(s.stance == "accept" for s in answer.stances.values())
                    continue
                assert table not in acceptable[r]
                counter = agent.counter_package(table, agent.aspiration(r, 4))
                # Stances object exactly where the counter changes the table, wanting its value.
                assert apply_stances(table, answer.stances) == counter
                assert counter in acceptable[r]
                fewest = min(changes(table, p) for p in acceptable[r])
                assert changes(table, counter) == fewest
                best = max(agent.utility(p) for p in acceptable[r]
                           if changes(table, p) == fewest)
                assert agent.utility(counter) == pytest.approx(best)


def test_counter_package_on_the_baseline_is_fast_and_consistent(
    baseline: Scenario, baseline_agents: dict[tuple[str, str], TimeDependentNegotiator]
) -> None:
    issues = baseline.issues
    tables = [
        Package(options={i.id: i.options[(k + j) % len(i.options)].id
                         for j, i in enumerate(issues)},
                terms={"army_ceiling": 50.0 + 40 * k})
        for k in range(6)
    ]
    last = baseline.decision.max_rounds
    latencies = []
    for (party, _), agent in baseline_agents.items():
        for k, table in enumerate(tables):
            r = 1 + k % last
            turn = agent.respond(ctx(party, r, last, table))
            latencies.append(turn.latency)
            assert turn.usage == Usage()
            answer = turn.content
            if answer.vote == "accept":
                continue
            counter = apply_stances(table, answer.stances)
            assert agent.utility(counter) >= agent.aspiration(r, last) - 1e-9
            assert agent.broken_red_lines(counter) == []
            assert counter == agent.counter_package(table, agent.aspiration(r, last))
            for dim, stance in answer.stances.items():
                if stance.stance == "object":
                    assert stance.wants is not None
                    assert stance.wants != {**table.options, **table.terms}[dim]
            assert answer.statement
            assert "aspiration" in answer.private_rationale
    assert statistics.median(latencies) < 0.05


def test_caucus_reply_restates_the_main_objection(tiny: Scenario) -> None:
    agent = negotiator(tiny, "a", "boulware")
    # x carries a's largest weight, and x3 breaks its red line.
    text = agent.caucus_reply(ctx("a", 1, 4, pkg("x3", "y1", 10.0)), "please").content.text
    assert "X" in text and "X3" in text
    ok = agent.caucus_reply(ctx("a", 1, 4, pkg("x1", "y1", 10.0)), "please").content.text
    assert "accept" in ok


def test_opening_states_ideal_and_priorities(tiny: Scenario) -> None:
    turn = negotiator(tiny, "a", "linear").opening(ctx("a", 1, 4))
    assert "X: X1; Y: Y1; T: 10 units" in turn.content.text
    assert "X, Y and T" in turn.content.text
    assert turn.usage == Usage() and turn.latency >= 0


def test_turn_taking_proposal_is_nearest_the_others_above_aspiration(tiny: Scenario) -> None:
    agent = negotiator(tiny, "a", "linear")
    table = pkg("x2", "y1", 5.0)
    positions = {"b": {"x": obj("x3"), "y": obj("y2"), "t": accept()},
                 "c": {"x": accept(), "y": accept(), "t": accept()}}
    rejected = [pkg("x1", "y1", 10.0)]
    turn = agent.propose(ctx("a", 2, 4, table, positions, rejected=rejected))
    proposal = turn.content
    assert proposal.caucus_with is None and proposal.rationale
    aspiration = agent.aspiration(2, 4)
    index = {"x1": 0, "x2": 1, "x3": 2, "y1": 0, "y2": 1}

    def distance(p: Package) -> float:
        wanted = [("x3", "y2", 5.0), ("x2", "y1", 5.0)]
        return sum(abs(index[p.options["x"]] - index[x]) / 2
                   + abs(index[p.options["y"]] - index[y]) + abs(p.terms["t"] - t) / 10
                   for x, y, t in wanted)

    candidates = [p for p in all_tiny() if p not in rejected and not agent.broken_red_lines(p)
                  and agent.utility(p) >= aspiration - 1e-9]
    assert proposal.package in candidates
    nearest = min(distance(p) for p in candidates)
    assert distance(proposal.package) == pytest.approx(nearest)
    assert agent.utility(proposal.package) == pytest.approx(
        max(agent.utility(p) for p in candidates if distance(p) == pytest.approx(nearest)))


# --------------------------------------------------------------------------- Nash mediator

POSITIONS = {
    "a": {"x": obj("x1"), "y": accept(), "t": obj(10.0)},
    "b": {"x": accept(), "y": obj("y2"), "t": obj(0.0)},
    "c": {"x": accept(), "y": accept(), "t": accept()},
}


def brute_force_products(table: Package) -> dict[int, float]:
    """The estimated Nash product of every tiny package (index into `all_tiny()`), by hand.

    Only the parties the decision rule needs count: tiny requires a and b, not c.
    """
    index = {"x1": 0, "x2": 1, "x3": 2, "y1": 0, "y2": 1}
    out = {}
    for n, p in enumerate(all_tiny()):
        product = 1.0
        for party, stances in POSITIONS.items():
            if party not in ("a", "b"):
                continue
            wanted = {d: s.wants if s.stance == "object" else
                      {**table.options, **table.terms}[d] for d, s in stances.items()}
            closeness = [
                1 - abs(index[p.options["x"]] - index[str(wanted["x"])]) / 2,
                1 - abs(index[p.options["y"]] - index[str(wanted["y"])]) / 1,
                1 - abs(p.terms["t"] - float(wanted["t"])) / 10,  # type: ignore[arg-type]
            ]
            product *= sum(closeness) / 3 + NASH_EPSILON
        out[n] = product
    return out


def test_nash_mediator_opens_with_the_middle_package(tiny: Scenario) -> None:
    mediator = NashMediator("m", private_view(tiny, "m"))
    turn = mediator.propose(ctx("m", 1, 4))
    assert turn.content.package == pkg("x2", "y1", 5.0)
    assert turn.content.caucus_with is None
    assert turn.usage == Usage()


def test_nash_mediator_maximizes_the_estimated_product(tiny: Scenario) -> None:
    mediator = NashMediator("m", private_view(tiny, "m"))
    table = pkg("x2", "y1", 5.0)
    products = brute_force_products(table)
    packages = all_tiny()
    rejected = [table]
    for round in range(2, 8):
        proposal = mediator.propose(ctx("m", round, 10, table, POSITIONS,
                                        rejected=rejected)).content
        assert proposal.package not in rejected
        best = max(v for n, v in products.items() if packages[n] not in rejected)
        assert products[packages.index(proposal.package)] == pytest.approx(best)
        rejected.append(proposal.package)
    assert len(set(map(Package.describe, rejected))) == len(rejected)


def test_nash_mediator_is_deterministic_and_names_who_moved_it(tiny: Scenario) -> None:
    table = pkg("x2", "y1", 5.0)
    context = ctx("m", 2, 4, table, POSITIONS, rejected=[table])
    first = NashMediator("m", private_view(tiny, "m")).propose(context).content
    second = NashMediator("m", private_view(tiny, "m")).propose(context).content
    assert first == second
    assert "toward" in first.rationale


def test_nash_mediator_on_the_baseline_never_retables(baseline: Scenario) -> None:
    mediator = make_scripted("nash", "un_mediator", private_view(baseline, "un_mediator"))
    table = mediator.propose(ctx("un_mediator", 1, 8)).content.package
    positions = {p: {d: obj(v) for d, v in {"territory": "all_four_regions",
                                            "army_ceiling": 50.0}.items()}
                 for p in ("russia", "us")}
    rejected = [table]
    for round in range(2, 5):
        turn = mediator.propose(ctx("un_mediator", round, 8, table, positions,
                                    rejected=rejected))
        assert turn.content.package not in rejected
        assert turn.latency < 5  # a sanity bound; bench/ measures speed
        table = turn.content.package
        rejected.append(table)


def test_mediators_caucus_with_a_lone_holdout(tiny: Scenario) -> None:
    table = pkg("x2", "y1", 5.0)
    positions = {**POSITIONS, "c": {"x": obj("x1"), "y": obj("y2"), "t": accept()},
                 "a": {"x": accept(), "y": accept(), "t": accept()}}
    for cls in (NashMediator, SingleTextMediator):
        mediator = cls("m", private_view(tiny, "m"))
        holdout = mediator.propose(ctx(
            "m", 2, 4, table, positions, {"a": "accept", "b": "reject", "c": "accept"},
            [table])).content
        assert holdout.caucus_with == "b"  # the only one of three to reject
        assert "Y (you asked for Y2" in holdout.caucus_message
        split = mediator.propose(ctx(
            "m", 2, 4, table, positions, {"a": "reject", "b": "reject", "c": "accept"},
            [table])).content
        assert split.caucus_with is None and split.caucus_message == ""


# --------------------------------------------------------------------------- single text


def test_single_text_opens_in_the_middle_and_moves_toward_majority_objections(
    tiny: Scenario,
) -> None:
    mediator = SingleTextMediator("m", private_view(tiny, "m"))
    middle = mediator.propose(ctx("m", 1, 4)).content.package
    assert middle == pkg("x2", "y1", 5.0)
    positions = {
        "a": {"x": obj("x1"), "y": accept(), "t": obj(10.0)},
        "b": {"x": obj("x1"), "y": accept(), "t": obj(10.0)},
        "c": {"x": accept(), "y": obj("y2"), "t": accept()},  # alone on y: no majority
    }
    revision = mediator.propose(ctx("m", 2, 4, middle, positions, rejected=[middle])).content
    assert revision.package == pkg("x1", "y1", 10.0)
    assert "X" in revision.rationale and "T" in revision.rationale


def test_single_text_moves_one_step_toward_the_median(tiny: Scenario) -> None:
    mediator = SingleTextMediator("m", private_view(tiny, "m"))
    last = pkg("x1", "y1", 0.0)
    positions = {
        "a": {"x": obj("x3"), "y": accept(), "t": obj(10.0)},
        "b": {"x": obj("x3"), "y": accept(), "t": obj(10.0)},
        "c": {"x": obj("x2"), "y": accept(), "t": accept()},
    }
    revision = mediator.propose(ctx("m", 2, 4, last, positions, rejected=[last])).content
    assert revision.package == pkg("x2", "y1", 5.0)  # one step each, not all the way


def test_single_text_never_retables_a_rejected_text(tiny: Scenario) -> None:
    mediator = SingleTextMediator("m", private_view(tiny, "m"))
    middle = pkg("x2", "y1", 5.0)
    # Only a objects (no majority): the text would stay put, so x moves toward a anyway.
    lone = {"a": {"x": obj("x1"), "y": accept(), "t": accept()},
            "b": {"x": accept(), "y": accept(), "t": accept()},
            "c": {"x": accept(), "y": accept(), "t": accept()}}
    moved = mediator.propose(ctx("m", 2, 4, middle, lone, rejected=[middle])).content
    assert moved.package == pkg("x1", "y1", 5.0)
    # The majority revision was rejected before: the next most contested issue moves further.
    earlier = pkg("x1", "y1", 5.0)
    positions = {"a": {"x": obj("x1"), "y": accept(), "t": obj(10.0)},
                 "b": {"x": obj("x1"), "y": accept(), "t": accept()},
                 "c": {"x": accept(), "y": accept(), "t": accept()}}
    rejected = [earlier, middle]
    revised = mediator.propose(ctx("m", 3, 4, middle, positions, rejected=rejected)).content
    assert revised.package not in rejected
    assert revised.package == pkg("x1", "y1", 10.0)


# --------------------------------------------------------------------------- factory


def test_factory_checks_roles_and_records_settings(tiny: Scenario) -> None:
    assert {"boulware", "linear", "conceder"} <= set(STRATEGIES.names())
    assert {"nash", "snt", "oracle"} <= set(MEDIATORS.names())
    for strategy in NEGOTIATORS:
        agent = make_scripted(strategy, "b", private_view(tiny, "b"))
        assert isinstance(agent, TimeDependentNegotiator)
        assert agent.settings.kind == "scripted" and agent.settings.strategy == strategy
        with pytest.raises(ValueError, match="mediator"):
            make_scripted(strategy, "m", private_view(tiny, "m"))
    assert isinstance(make_scripted("nash", "m", private_view(tiny, "m")), NashMediator)
    assert isinstance(make_scripted("snt", "m", private_view(tiny, "m")), SingleTextMediator)
    for strategy in ("nash", "snt"):
        assert make_scripted(strategy, "m", private_view(tiny, "m")).settings.strategy == \
            strategy
        with pytest.raises(ValueError, match="voting party"):
            make_scripted(strategy, "a", private_view(tiny, "a"))
    with pytest.raises(ValueError, match="unknown"):
        make_scripted("tit_for_tat", "a", private_view(tiny, "a"))


def test_mediator_turns_are_valid(tiny: Scenario) -> None:
    mediator = make_scripted("nash", "m", private_view(tiny, "m"))
    assert "Welcome" in mediator.opening(ctx("m", 1, 4)).content.text
    answer = mediator.respond(ctx("m", 1, 4, pkg("x2", "y1", 5.0))).content
    assert answer.vote == "accept" and set(answer.stances) == {"x", "y", "t"}
    assert mediator.caucus_reply(ctx("m", 1, 4), "hello").content.text
