"""A person plays Ukraine in the terminal against four LLM agents on the embedded model: quits
in round 2, resumes, and finishes (the [local] extra; minutes of CPU: `pytest -m live`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pexpect
import pytest

pytest.importorskip("llama_cpp", reason="the [local] extra (llama-cpp-python) is not installed")

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "scenarios" / "baseline.yaml"

PROMPTS = [
    "Your words",  # 0: opening (and caucus replies)
    r"Round (\d+) of at most",  # 1: the panel of a turn says its round
    "Your vote",  # 2
    r"\(on the table: [^)]*\): accept or object",  # 3
    "the option you want instead",  # 4
    "the value you want instead",  # 5
    "Your public statement",  # 6 (the panel's "Recent public statements" must not match)
    "Your private note",  # 7
    "Paused",  # 8
    "(DEAL|NO_DEAL|DEADLOCK):",  # 9
]


def _spawn(args: list[str], cwd: Path) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DETENTE_"))}
    env.update({"COLUMNS": "120", "LINES": "50", "TERM": "xterm"})
    return pexpect.spawn(sys.executable, ["-m", "detente", *args], cwd=str(cwd), env=env,
                         encoding="utf-8", timeout=900, dimensions=(50, 120))


def _play(child: pexpect.spawn, quit_in_round: int | None) -> str:
    """Answer every prompt (reject in round 1, accept after) until the run pauses or ends;
    type 'quit' at the vote of `quit_in_round`."""
    round_ = 0
    while True:
        k = child.expect(PROMPTS)
        if k == 0:
            child.sendline("Ukraine keeps its army and its sovereignty; no cession in law.")
        elif k == 1:
            round_ = int(child.match.group(1))
        elif k == 2:
            if round_ == quit_in_round:
                child.sendline("quit")
            else:
                child.sendline("reject" if round_ == 1 else "accept")
        elif k == 3:
            child.sendline("accept")
        elif k in (4, 5):
            child.sendline("")
        elif k == 6:
            child.sendline(f"Ukraine's word in round {round_}.")
        elif k == 7:
            child.sendline("for the record only")
        else:
            child.expect(pexpect.EOF)
            child.close()
            return PROMPTS[k]


@pytest.mark.timeout(3600)  # four LLM agents on a 135M model, two rounds: minutes per round
def test_a_person_plays_ukraine_on_the_embedded_model_quits_and_resumes(tmp_path: Path
                                                                         ) -> None:
    child = _spawn(["run", str(BASELINE), "--agent", "ukraine=human", "--rounds", "2",
                    "--out", str(tmp_path)], tmp_path)
    child.logfile_read = (tmp_path / "terminal.log").open("w", encoding="utf-8")
    assert _play(child, quit_in_round=2) == "Paused"
    assert child.exitstatus == 0
    (run_dir,) = [p.parent for p in tmp_path.glob("*/*/events.jsonl")]
    child = _spawn(["run", "--resume", str(run_dir)], tmp_path)
    assert _play(child, quit_in_round=None) != "Paused"
    assert child.exitstatus == 0
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] in ("deal", "no_deal", "deadlock")
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    mine = [e for e in events if e.get("speaker") == "ukraine"]
    assert {e["id"] for e in mine} >= {"opening/ukraine", "r1/response/ukraine"}
    assert all(e["human"] for e in mine)
    llm = [e for e in events if e.get("speaker") in ("us", "russia", "eu", "un_mediator")
           and e["type"] in ("statement", "proposal", "response")]
    assert llm and not any(e["human"] for e in llm)
    # Every agent turn records its model call; a mediator's caucus message is part of its
    # proposal's answer, whose event holds the call.
    assert all(e["llm"] is not None for e in llm if e.get("kind") != "caucus")
    assert any(e["type"] == "resumed" for e in events)
