"""What runs cost (issue 13, part 3): totals per party, round, run and sweep, money from the
shipped price table or the user's, "unknown" for a model without a price, budgets on `run` and
`sweep`, the sweep's dry run, and compare's cost per run and per deal.

Every run talks to the fake OpenAI server (tests/fake_openai.py), which bills about four
characters a token; the ledger below recomputes what it billed, request by request, so every
total is checked against what the endpoint actually charged. The CLI runs in this process.
"""

from __future__ import annotations

import json
import re
import threading
import tomllib
from collections import defaultdict
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from fake_openai import count_prompt_tokens, count_tokens
from helpers import (
    BASELINE,
    ROOT,
    TINY,
    CliResult,
    Req,
    SchemaResponder,
    events_of,
    invoke,
    load,
    parse_request,
    serve,
)

MODEL = "gpt-4o-mini"


def shipped_price(model: str) -> tuple[float, float]:
    """The shipped table's price of `model`, read from the data file itself."""
    text = resources.files("detente").joinpath("data/prices.toml").read_text(encoding="utf-8")
    entry = tomllib.loads(text)["models"][model]
    return float(entry["input"]), float(entry["output"])


def dollars(prompt: int, completion: int, price: tuple[float, float]) -> float:
    return (prompt * price[0] + completion * price[1]) / 1_000_000


class Ledger(SchemaResponder):
    """Answers every request (rejecting every package, so every round is played; tabling a
    package that moves each round), and records what the fake server bills for each: party,
    round, prompt and completion tokens."""

    def __init__(self, bundle: Any, *, vote: str = "reject", fill: float = 0.0) -> None:
        super().__init__(bundle)
        self._vote = vote
        self.fill = fill
        """0: short answers; else every text field written to this share of its limit."""
        self.billed: list[tuple[str, int, int, int]] = []
        self._ledger_lock = threading.Lock()

    def vote(self, req: Req) -> str:
        return self._vote

    def pick(self, req: Req, path: tuple[str, ...], values: Sequence[Any]) -> Any:
        if len(path) == 2 and path[0] == "package":
            return values[(req.round + len(path[1])) % len(values)]
        return super().pick(req, path, values)

    def reply(self, req: Req) -> Any:
        answer = super().reply(req)
        if self.fill:
            answer = _filled(answer, req.schema, self.fill)
        return answer

    def __call__(self, body: dict[str, Any]) -> Any:
        answer = super().__call__(body)
        req = parse_request(body, self.names)
        with self._ledger_lock:
            self.billed.append((req.party, req.round, count_prompt_tokens(body),
                                count_tokens(answer)))
        return answer

    def totals(self) -> tuple[int, int]:
        return (sum(b[2] for b in self.billed), sum(b[3] for b in self.billed))


def _filled(answer: Any, schema: dict[str, Any], share: float) -> Any:
    """Every top-level text field of `answer` written to `share` of its maxLength."""
    prose = "The delegation asks every party to weigh this package on its merits and move. "
    out = dict(answer)
    for key, node in schema.get("properties", {}).items():
        limit = node.get("maxLength")
        if isinstance(out.get(key), str) and isinstance(limit, int):
            out[key] = (prose * (limit // len(prose) + 1))[: int(limit * share)]
    return out


def no_traceback(result: CliResult) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def one_error(result: CliResult) -> str:
    """The single error line a failed command printed (no traceback)."""
    no_traceback(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def result_of(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    return data


def only_run(out: Path) -> Path:
    found = sorted(p.parent for p in out.glob("**/events.jsonl"))
    assert len(found) == 1, found
    return found[0]


def manifest(sweep_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    return data


# --------------------------------------------------------------------------- totals and money


def test_a_runs_cost_per_party_and_round_is_what_the_endpoint_billed_at_the_shipped_price(
    tmp_path: Path,
) -> None:
    ledger = Ledger(load(TINY))
    with serve(ledger) as fake:
        done = invoke("run", TINY, "--agent", f"all={MODEL}", "--base-url", fake.base_url,
                      "--rounds", "2", "--out", tmp_path, cwd=ROOT)
        sent = len(fake.requests)
    assert done.returncode == 0, done.stderr
    price = shipped_price(MODEL)
    cost = result_of(only_run(tmp_path))["cost"]

    by_party: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    by_round: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for party, round_, prompt, completion in ledger.billed:
        for row in (by_party[party], by_round[round_]):
            row[0] += 1
            row[1] += prompt
            row[2] += completion
    assert set(cost["parties"]) == {"a", "b", "c", "m"}
    for party, (requests, prompt, completion) in by_party.items():
        line = cost["parties"][party]
        assert (line["requests"], line["prompt_tokens"], line["completion_tokens"]) == (
            requests, prompt, completion), party
        assert line["usd"] == pytest.approx(dollars(prompt, completion, price))
    assert [r["round"] for r in cost["rounds"]] == [0, 1, 2]
    for r in cost["rounds"]:
        requests, prompt, completion = by_round[r["round"]]
        assert (r["requests"], r["prompt_tokens"], r["completion_tokens"]) == (
            requests, prompt, completion), r["round"]
        assert r["usd"] == pytest.approx(dollars(prompt, completion, price))
    prompt, completion = ledger.totals()
    assert cost["total"]["requests"] == sent == len(ledger.billed)
    assert (cost["total"]["prompt_tokens"], cost["total"]["completion_tokens"]) == (
        prompt, completion)
    assert cost["total"]["usd"] == pytest.approx(dollars(prompt, completion, price))
    assert cost["prices"] == {MODEL: {"input": price[0], "output": price[1],
                                      "embedded": False}}
    assert "detente's table" in cost["price_source"]
    # The command's summary and the transcript say the same.
    shown = f"${cost['total']['usd']:,.4f}"
    assert f"Cost: {shown} ({sent} requests; {prompt + completion:,} tokens)" in done.stdout
    transcript = (only_run(tmp_path) / "transcript.md").read_text(encoding="utf-8")
    assert f"| **all** | {sent} | 0 | {prompt:,} | {completion:,} | {shown} |" in transcript
    assert "| 0 (openings) | 4 |" in transcript


def test_a_sweeps_cost_is_the_sum_of_its_runs(tmp_path: Path) -> None:
    ledger = Ledger(load(TINY), vote="accept")
    with serve(ledger) as fake:
        done = invoke("sweep", TINY, "--seeds", "2", "--agent", f"all={MODEL}", "--base-url",
                      fake.base_url, "--rounds", "1", "--out", tmp_path, "--name", "s", cwd=ROOT)
        sent = len(fake.requests)
    assert done.returncode == 0, done.stderr
    entries = manifest(tmp_path / "s")["entries"]
    assert [e["cost"]["requests"] for e in entries] == [sent // 2, sent // 2]
    for e in entries:  # each entry's cost is its run's
        run_cost = result_of(tmp_path / "s" / e["run_dir"])["cost"]["total"]
        assert e["cost"]["usd"] == pytest.approx(run_cost["usd"])
    prompt, completion = ledger.totals()
    usd = dollars(prompt, completion, shipped_price(MODEL))
    assert sum(e["cost"]["usd"] for e in entries) == pytest.approx(usd)
    line = " ".join(done.stdout.split())  # the console may wrap it
    assert (f"Cost: ${usd:,.4f} over {sent} model requests, {prompt + completion:,} tokens"
            in line)
    # The table's row has the figures uncut, even 80 columns wide.
    row = next(r for r in done.stdout.splitlines() if r.startswith("│ tiny"))
    assert f"${usd:,.4f}" in row and f"{prompt + completion:,}" in row, row


def test_a_price_file_overrides_the_shipped_table_and_extends_it(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('date = "2026-01"\n[models]\n'
                      f'"{MODEL}" = {{ input = 100.0, output = 1000.0 }}\n'
                      '"my-model" = { input = 2.0, output = 4.0 }\n', encoding="utf-8")
    ledger = Ledger(load(TINY), vote="accept")
    with serve(ledger) as fake:
        done = invoke("run", TINY, "--agent", f"all={MODEL}", "--agent", "m=my-model",
                      "--base-url", fake.base_url, "--rounds", "1", "--out", tmp_path / "runs",
                      "--prices", prices, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    cost = result_of(only_run(tmp_path / "runs"))["cost"]
    expected = {"a": (100.0, 1000.0), "b": (100.0, 1000.0), "c": (100.0, 1000.0),
                "m": (2.0, 4.0)}
    for party, price in expected.items():
        line = cost["parties"][party]
        assert line["usd"] == pytest.approx(
            dollars(line["prompt_tokens"], line["completion_tokens"], price)), party
    assert cost["prices"]["my-model"]["input"] == 2.0
    assert str(prices) in cost["price_source"] and "2026-01" in cost["price_source"]


@pytest.mark.parametrize("content, says", [
    (None, "no such price file"),
    ("[models\n", "malformed TOML"),
    ('[models]\n"m" = { input = -1, output = 1 }\n', "models.m.input"),
    ('[models]\n"m" = { input = 1 }\n', "models.m"),
    ('currency = "EUR"\n', "currency: unknown key"),
])
def test_a_bad_price_file_is_one_clear_error_before_anything_runs(
    content: str | None, says: str, tmp_path: Path,
) -> None:
    prices = tmp_path / "prices.toml"
    if content is not None:
        prices.write_text(content, encoding="utf-8")
    for command in ("run", "sweep"):
        done = invoke(command, TINY, "--agent", "all=scripted:linear", "--prices", prices,
                      "--out", tmp_path / command, cwd=ROOT)
        assert done.returncode == 2
        assert says in one_error(done)
        assert not (tmp_path / command).exists()


def test_a_model_without_a_price_costs_unknown_never_zero(tmp_path: Path) -> None:
    ledger = Ledger(load(TINY), vote="accept")
    with serve(ledger) as fake:
        alone = invoke("run", TINY, "--agent", "all=unpriced-model", "--base-url",
                       fake.base_url, "--rounds", "1", "--out", tmp_path / "alone", cwd=ROOT)
        mixed = invoke("sweep", TINY, "--seeds", "1", "--agent", f"all={MODEL}", "--agent",
                       "m=unpriced-model", "--base-url", fake.base_url, "--rounds", "1",
                       "--out", tmp_path / "mixed", "--name", "s", cwd=ROOT)
        refused = invoke("run", TINY, "--agent", "all=unpriced-model", "--base-url",
                         fake.base_url, "--budget", "1", "--out", tmp_path / "budget", cwd=ROOT)
    assert alone.returncode == 0, alone.stderr
    cost = result_of(only_run(tmp_path / "alone"))["cost"]
    assert cost["total"]["requests"] > 0
    assert cost["total"]["usd"] is None and cost["total"]["unpriced"] == ["unpriced-model"]
    assert cost["prices"]["unpriced-model"] == {"input": None, "output": None,
                                                "embedded": False}
    assert "Cost: unknown (unpriced-model has no price)" in alone.stdout
    assert "$0 " not in alone.stdout and "$0." not in alone.stdout
    transcript = (only_run(tmp_path / "alone") / "transcript.md").read_text(encoding="utf-8")
    assert "unpriced-model: no price (unknown)" in transcript
    # Given a price later, `detente replay` prices the same run again.
    prices = tmp_path / "prices.toml"
    prices.write_text('[models]\n"unpriced-model" = { input = 1.0, output = 2.0 }\n',
                      encoding="utf-8")
    again = invoke("replay", only_run(tmp_path / "alone"), "--prices", prices, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    total = result_of(only_run(tmp_path / "alone"))["cost"]["total"]
    assert total["usd"] == pytest.approx(
        dollars(total["prompt_tokens"], total["completion_tokens"], (1.0, 2.0)))
    assert total["unpriced"] == []

    # Some parties priced: what they cost is a lower bound, and the rest is unknown.
    assert mixed.returncode == 0, mixed.stderr
    entry = manifest(tmp_path / "mixed" / "s")["entries"][0]
    assert entry["cost"]["usd"] is None and entry["cost"]["priced_usd"] > 0
    line = " ".join(mixed.stdout.split())
    assert re.search(r"Cost: ≥ \$0\.\d{4} \(\+ unknown: unpriced-model\)", line), line

    # A budget cannot be kept without a price: refused before any call.
    assert refused.returncode == 2
    assert "no price for unpriced-model" in one_error(refused)
    assert not (tmp_path / "budget").exists()


# --------------------------------------------------------------------------- budgets


def test_a_sweep_stops_at_its_budget_and_a_larger_one_goes_on(tmp_path: Path) -> None:
    ledger = Ledger(load(TINY))
    common = ["--agent", f"all={MODEL}", "--rounds", "2", "--concurrency", "1",
              "--out", str(tmp_path), "--name", "s"]
    with serve(ledger) as fake:
        # What one run costs, measured on another seed (its requests differ).
        single = invoke("run", TINY, "--seed", "99", "--agent", f"all={MODEL}", "--base-url",
                        fake.base_url, "--rounds", "2", "--out", tmp_path / "single", cwd=ROOT)
        assert single.returncode == 0, single.stderr
        one_run = result_of(only_run(tmp_path / "single"))["cost"]["total"]["usd"]
        before, billed_before = len(fake.requests), len(ledger.billed)
        budget = 1.8 * one_run  # one run and a bit: the second stops, the third never starts
        stopped = invoke("sweep", TINY, "--seeds", "3", "--base-url", fake.base_url,
                         "--budget", f"{budget:.6f}", *common, cwd=ROOT)
        billed = ledger.billed[billed_before:]
        entries = {e["seed"]: e for e in manifest(tmp_path / "s")["entries"]}
        halted = [e["run_dir"] for e in entries.values() if e["status"] == "budget"
                  and (tmp_path / "s" / e["run_dir"] / "events.jsonl").exists()]
        assert halted, "no run was stopped part-way"
        events = events_of(tmp_path / "s" / halted[0])
        status = result_of(tmp_path / "s" / halted[0])["status"]
        again = invoke("sweep", TINY, "--seeds", "3", "--base-url", fake.base_url, *common,
                       cwd=ROOT)  # no --budget: the sweep's own again
        spent_again = sum(e["cost"]["usd"] for e in manifest(tmp_path / "s")["entries"]
                          if e.get("cost"))
        larger = invoke("sweep", TINY, "--seeds", "3", "--base-url", fake.base_url,
                        "--budget", f"{10 * one_run:.6f}", *common, cwd=ROOT)
        fake_requests = fake.requests[before:]

    assert stopped.returncode == 3
    message = one_error(stopped)
    assert "budget" in message and "larger --budget" in message
    sweep_dir = tmp_path / "s"
    statuses = sorted(e["status"] for e in entries.values())
    assert statuses == ["budget", "budget", "complete"], entries
    spent = sum(e["cost"]["usd"] for e in entries.values() if e.get("cost"))
    assert 0 < spent <= budget
    assert spent == pytest.approx(dollars(sum(b[2] for b in billed),
                                          sum(b[3] for b in billed), shipped_price(MODEL)))
    # Everything written so far is kept: the stopped run's folder and its turns.
    assert events[-1]["type"] == "outcome" and events[-1]["status"] == "budget"
    assert status == "budget"
    turns_before = [e["id"] for e in events if e.get("usage", {}).get("prompt_tokens")]

    # Without --budget a rerun keeps the sweep's own: it stops again, still within it.
    assert again.returncode == 3 and spent_again <= budget

    assert larger.returncode == 0, larger.stderr
    assert all(e["status"] == "complete" for e in manifest(sweep_dir)["entries"])
    resumed = events_of(sweep_dir / halted[0])
    assert [e["id"] for e in resumed[: len(events)]] == [e["id"] for e in events]
    assert any(e["type"] == "resumed" for e in resumed)
    assert set(turns_before) <= {e["id"] for e in resumed}
    # No request already paid for was sent again.
    bodies = [json.dumps(b, sort_keys=True) for b in fake_requests]
    assert len(bodies) == len(set(bodies))


def test_a_run_stops_at_its_budget_with_status_3_and_resumes_with_a_larger_one(
    tmp_path: Path,
) -> None:
    ledger = Ledger(load(TINY))
    with serve(ledger) as fake:
        stopped = invoke("run", TINY, "--agent", f"all={MODEL}", "--base-url", fake.base_url,
                         "--rounds", "2", "--out", tmp_path, "--budget", "0.0015", cwd=ROOT)
        run_dir = only_run(tmp_path)
        paid = len(fake.requests)
        status = result_of(run_dir)["status"]
        events = events_of(run_dir)
        billed = list(ledger.billed)
        resumed = invoke("run", "--resume", run_dir, "--base-url", fake.base_url,
                         "--budget", "0.05", cwd=ROOT)
        bodies = [json.dumps(b, sort_keys=True) for b in fake.requests]

    assert stopped.returncode == 3
    message = one_error(stopped)
    assert message.startswith("error: budget: stopped before a call that could take the "
                              "spending past the run's budget of $0.0015")
    assert f"detente run --resume {run_dir} --budget MORE" in message
    assert status == "budget" and events[-1]["status"] == "budget"
    assert 0 < paid < 8  # stopped in the openings, which it keeps
    assert sum(1 for e in events if e["type"] == "statement") == paid
    spent = dollars(sum(b[2] for b in billed), sum(b[3] for b in billed), shipped_price(MODEL))
    assert spent <= 0.0015

    assert resumed.returncode == 0, resumed.stderr
    final = result_of(run_dir)
    assert final["status"] in ("deal", "no_deal")
    assert final["cost"]["total"]["requests"] == len(bodies)
    assert len(bodies) == len(set(bodies))  # the openings paid for were not asked again
    assert events == events_of(run_dir)[: len(events)]


def test_a_budget_stop_keeps_the_answers_of_turns_taken_at_the_same_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The openings are taken at once; when the budget refuses one, the others' answers, paid
    for, are logged before the stop, however long their writing takes (a loaded machine)."""
    import time

    from detente.events import EventLog

    write = EventLog.write

    def slow(self: EventLog, *events: Any) -> Any:
        if threading.current_thread() is not threading.main_thread() and any(
                getattr(e, "type", "") == "statement" for e in events):
            time.sleep(0.3)
        return write(self, *events)

    monkeypatch.setattr(EventLog, "write", slow)
    with serve(Ledger(load(TINY))) as fake:
        stopped = invoke("run", TINY, "--agent", f"all={MODEL}", "--base-url", fake.base_url,
                         "--rounds", "1", "--out", tmp_path, "--budget", "0.0015", cwd=ROOT)
        paid = len(fake.requests)
        time.sleep(0.5)  # a write that came too late would land now
    assert stopped.returncode == 3
    events = events_of(only_run(tmp_path))
    assert [e["type"] for e in events[-2:]] == ["error", "outcome"]
    openings = [e for e in events if e["type"] == "statement"]
    assert paid > 0 and len(openings) == paid  # every answer paid for is in the log


@pytest.mark.parametrize("budget", ["0", "-1", "nan", "inf"])
def test_a_budget_must_be_a_positive_amount(budget: str, tmp_path: Path) -> None:
    with serve(SchemaResponder(load(TINY))) as fake:
        for command in ("run", "sweep"):
            done = invoke(command, TINY, "--agent", f"all={MODEL}", "--base-url",
                          fake.base_url, "--budget", budget, "--out", tmp_path / command,
                          cwd=ROOT)
            assert done.returncode == 2, command
            no_traceback(done)
            assert "--budget" in done.stderr
            assert not (tmp_path / command).exists()
        assert not fake.requests


# --------------------------------------------------------------------------- the dry run


_ESTIMATE = re.compile(r"^\s*tokens ([\d,]+) prompt \+ ([\d,]+) completion; cost (\S+)",
                       re.MULTILINE)
_CALLS = re.compile(r"(\d+) runs, ([\d,]+) model calls \(([\d,]+) if every run ends in round "
                    r"1, at most ([\d,]+)\)")


def _number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.parametrize("fill", [0.0, 1.0], ids=["terse answers", "answers at their limits"])
def test_the_dry_run_estimates_tokens_within_a_quarter_of_what_the_sweep_uses(
    fill: float, tmp_path: Path,
) -> None:
    design = [BASELINE, "--seeds", "2", "--rounds", "2", "--agent", f"all={MODEL}"]
    ledger = Ledger(load(BASELINE), fill=fill)
    with serve(ledger) as fake:
        dry = invoke("sweep", *design, "--base-url", fake.base_url, "--out", tmp_path / "dry",
                     "--dry-run", cwd=ROOT)
        assert dry.returncode == 0, dry.stderr
        assert not fake.requests and not (tmp_path / "dry").exists()  # nothing spent
        real = invoke("sweep", *design, "--base-url", fake.base_url, "--out", tmp_path,
                      "--name", "s", cwd=ROOT)
        assert real.returncode == 0, real.stderr
        calls = len(fake.requests)
    text = " ".join(dry.stdout.split("\n  "))  # the console may wrap a line
    found = _ESTIMATE.search(dry.stdout)
    counted = _CALLS.search(" ".join(text.split()))
    assert found is not None and counted is not None, dry.stdout
    prompt, completion = _number(found.group(1)), _number(found.group(2))
    runs, estimated_calls, fewest, most = map(_number, counted.groups())
    measured_prompt, measured_completion = ledger.totals()
    ratio = (prompt + completion) / (measured_prompt + measured_completion)
    print(f"dry-run estimate / measured tokens ({'filled' if fill else 'terse'}): {ratio:.3f}")
    assert 0.75 <= ratio <= 1.25, (prompt, completion, measured_prompt, measured_completion)
    assert runs == 2 and fewest <= calls <= most
    assert 0.75 <= estimated_calls / calls <= 1.25
    usd = dollars(prompt, completion, shipped_price(MODEL))
    assert found.group(3) == f"${usd:,.4f}"


def test_the_dry_run_says_unknown_for_a_model_without_a_price(tmp_path: Path) -> None:
    done = invoke("sweep", TINY, "--seeds", "1", "--agent", "all=unpriced-model",
                  "--base-url", "http://127.0.0.1:9/v1", "--dry-run", "--out",
                  tmp_path / "out", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    found = _ESTIMATE.search(done.stdout)
    assert found is not None and found.group(3) == "unknown"
    assert "No price for unpriced-model: its cost is unknown" in " ".join(done.stdout.split())
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- compare


def test_compare_shows_cost_per_run_and_per_deal(tmp_path: Path) -> None:
    class Half(Ledger):
        """Seed 0 agrees in round 1; seed 1 never does."""

        def vote(self, req: Req) -> str:
            return "accept" if req.body["seed"] == 0 else "reject"

    ledger = Half(load(TINY))
    with serve(ledger) as fake:
        done = invoke("sweep", TINY, "--seeds", "2", "--agent", f"all={MODEL}", "--base-url",
                      fake.base_url, "--rounds", "2", "--out", tmp_path, "--name", "s",
                      cwd=ROOT)
    assert done.returncode == 0, done.stderr
    runs = [result_of(tmp_path / "s" / "tiny" / f"seed-{s}") for s in (0, 1)]
    assert [r["status"] for r in runs] == ["deal", "no_deal"]
    costs = [r["cost"]["total"]["usd"] for r in runs]
    assert costs[0] < costs[1]

    shown = invoke("compare", "--json", tmp_path / "s", cwd=ROOT)
    assert shown.returncode == 0, shown.stderr
    group = json.loads(shown.stdout)["groups"][0]
    assert group["cost_per_run"]["mean"] == pytest.approx(sum(costs) / 2)
    assert group["cost_per_deal"]["value"] == pytest.approx(sum(costs))  # one deal

    table = invoke("compare", tmp_path / "s", cwd=ROOT)
    assert table.returncode == 0, table.stderr
    flat = " ".join(table.stdout.split())
    assert "cost per run" in flat and "cost per deal" in flat
    assert f"${sum(costs):,.4f}" in flat  # the cost per deal


def test_compare_prices_runs_as_they_were_priced(tmp_path: Path) -> None:
    """A sweep priced with --prices is compared at those prices, not as unknown."""
    prices = tmp_path / "prices.toml"
    prices.write_text('[models]\n"my-model" = { input = 1.0, output = 2.0 }\n',
                      encoding="utf-8")
    with serve(Ledger(load(TINY), vote="accept")) as fake:
        done = invoke("sweep", TINY, "--seeds", "1", "--agent", "all=my-model", "--base-url",
                      fake.base_url, "--rounds", "1", "--out", tmp_path, "--name", "s",
                      "--prices", prices, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    usd = result_of(tmp_path / "s" / "tiny" / "seed-0")["cost"]["total"]["usd"]
    assert usd > 0
    shown = invoke("compare", "--json", tmp_path / "s", cwd=ROOT)
    group = json.loads(shown.stdout)["groups"][0]
    assert group["cost_per_run"]["mean"] == pytest.approx(usd)
    assert group["cost_per_deal"]["value"] == pytest.approx(usd)


@pytest.mark.parametrize("budget, says", [
    ("0.0001", "$0.0001: below the estimate: the sweep would likely stop part-way"),
    ("1000", "$1,000.00: above even the estimate's upper bound"),
])
def test_the_dry_run_weighs_a_budget_against_the_estimate(budget: str, says: str,
                                                           tmp_path: Path) -> None:
    done = invoke("sweep", TINY, "--seeds", "2", "--agent", f"all={MODEL}", "--base-url",
                  "http://127.0.0.1:9/v1", "--dry-run", "--budget", budget, "--out",
                  tmp_path / "out", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert f"Budget {says}" in " ".join(done.stdout.split())
    assert not (tmp_path / "out").exists()
