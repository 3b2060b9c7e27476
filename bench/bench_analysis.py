"""The outcome-space analysis against its memory floor and against NegMAS, 10^4 to 10^7 packages.

    .venv/bin/python bench/bench_analysis.py                  # every size; NegMAS up to 10^6
    .venv/bin/python bench/bench_analysis.py --negmas-max 7   # NegMAS at 10^7 too (minutes, GBs)
    .venv/bin/pip install -e ".[bench]"                       # NegMAS, for the comparison

Synthetic scenarios (bench/synthetic.py: four parties in two opposed blocs, so the Pareto
frontier is large) of 4 to 7 issues of 10 options. The process is pinned to one core. For each
size, in the same run, the median of `--repeat` timings of:

- `analysis`: `detente.analysis.analyze`, the whole report: counts, ZOPA, Nash and
  Kalai-Smorodinsky packages and the Pareto frontier (two streaming passes over the grid);
- `floor`: a plain numpy pass that only computes every package's utilities, in the same
  chunks, in the cheapest way numpy allows (the trailing dimensions' sums computed once, then
  one broadcast addition per chunk writes each package's utilities): the memory-bandwidth
  floor of any analysis that looks at every package;
- `frontier`: `detente.analysis.pareto_frontier` alone, and NegMAS's `pareto_frontier` on the
  same outcome space (the issues with the options no required party forbids, the parties'
  linear additive utilities): both must find the same number of frontier packages.

Ratios: analysis / floor, and NegMAS / detente's frontier. Peak memory is traced
(tracemalloc, numpy's allocations included) in a separate run of the analysis, so tracing
does not slow the timed runs; it stays flat as the space grows (streaming in chunks).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from synthetic import synthetic_scenario  # noqa: E402

from detente.analysis import DEFAULT_CHUNK, analyze, pareto_frontier  # noqa: E402
from detente.scenario import Scenario  # noqa: E402
from detente.space import PackageSpace  # noqa: E402

ISSUES = {4: 10**4, 5: 10**5, 6: 10**6, 7: 10**7}
"""Issues of 10 options -> packages."""


def utilities_floor(scenario: Scenario, chunk_size: int = DEFAULT_CHUNK) -> float:
    """Every package's utilities, chunk by chunk, and nothing else; returns the largest."""
    space = PackageSpace(scenario)
    n_voters = len(space.voters)
    first, size = len(space.sizes), 1
    while first > 0 and size * space.sizes[first - 1] <= chunk_size:
        first -= 1
        size *= space.sizes[first]
    tail = np.zeros((size, n_voters))
    if first < len(space.sizes):
        index = np.unravel_index(np.arange(size), space.sizes[first:])
        for j, k in enumerate(range(first, len(space.sizes))):
            tail += space.contributions(k)[index[j]]
    rows = space.total // size
    step = max(1, chunk_size // size)
    top = -np.inf
    out = np.empty((step, size, n_voters))
    for row in range(0, rows, step):
        stop = min(row + step, rows)
        head = np.zeros((stop - row, n_voters))
        lead = np.unravel_index(np.arange(row, stop), space.sizes[:first]) if first else ()
        for k in range(first):
            head += space.contributions(k)[lead[k]]
        block = out[: stop - row]
        np.add(head[:, None, :], tail[None, :, :], out=block)
        top = max(top, float(block[0, 0, 0]))  # touch the result; the pass is the cost
    return top


def negmas_frontier(scenario: Scenario) -> Callable[[], int]:
    """NegMAS's pareto_frontier on the scenario's admissible outcome space (a product set here:
    the synthetic red lines each forbid options of one issue)."""
    from negmas import make_issue
    from negmas.preferences import LinearAdditiveUtilityFunction, pareto_frontier
    from negmas.preferences.value_fun import TableFun

    space = PackageSpace(scenario)
    assert not scenario.terms, "synthetic scenarios for NegMAS have issues only"
    forbidden: dict[str, set[str]] = {}
    for line in space.red_lines:
        rule: Any = line.rule
        assert rule.kind == "forbid", "only forbid red lines keep the admissible set a product"
        forbidden.setdefault(rule.issue, set()).update(rule.options)
    issues = [make_issue(values=[o for o in space.option_ids[k]
                                 if o not in forbidden.get(issue_id, set())], name=issue_id)
              for k, issue_id in enumerate(space.issue_ids)]
    ufuns = []
    for party in space.voters:
        prefs = scenario.preferences[party]
        values = {issue.name: TableFun({o: prefs.utilities[issue.name][o]
                                        for o in issue.values}) for issue in issues}
        ufuns.append(LinearAdditiveUtilityFunction(
            values=values, weights={i.name: prefs.weights[i.name] for i in issues},
            issues=issues))

    def run() -> int:
        front, _ = pareto_frontier(ufuns, issues=issues)
        return len(front)

    return run


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds of `repeat` calls, and the last call's value."""
    seconds = []
    value = None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(ISSUES),
                        choices=sorted(ISSUES), help="issues of 10 options (4 = 10^4 packages)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each (median)")
    parser.add_argument("--negmas-max", type=int, default=6,
                        help="largest size NegMAS runs at (issues; 0: never)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    try:
        import negmas  # noqa: F401
        have_negmas = True
    except ImportError:
        have_negmas = False
        print("NegMAS is not installed (pip install -e '.[bench]'): its column is left out.")

    load = os.getloadavg()
    print(f"one core of {os.cpu_count()}; load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}; median of {args.repeat}; seconds")
    print(f"{'packages':>11} {'analysis':>9} {'floor':>7} {'x floor':>8} {'peak MiB':>9} "
          f"{'ZOPA':>9} {'frontier':>9} {'detente':>8} {'NegMAS':>8} {'x detente':>9}")
    for issues in args.sizes:
        scenario = synthetic_scenario(issues, 10, seed=1)
        total = ISSUES[issues]
        seconds, report = timed(lambda s=scenario: analyze(s), args.repeat)
        assert report.packages == total
        floor, _ = timed(lambda s=scenario: utilities_floor(s), args.repeat)
        tracemalloc.start()
        analyze(scenario)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        ours, (_, ids) = timed(lambda s=scenario: pareto_frontier(PackageSpace(s)), args.repeat)
        assert len(ids) == report.pareto_frontier
        theirs = "-"
        ratio = "-"
        if have_negmas and issues <= args.negmas_max:
            negmas_seconds, count = timed(negmas_frontier(scenario), 1 if issues >= 6 else
                                          args.repeat)
            if count != report.pareto_frontier:
                raise SystemExit(f"NegMAS finds {count} frontier packages, detente "
                                 f"{report.pareto_frontier}: not the same outcome space")
            theirs = f"{negmas_seconds:.3f}"
            ratio = f"{negmas_seconds / ours:.1f}"
        print(f"{total:>11,} {seconds:>9.3f} {floor:>7.3f} {seconds / floor:>8.1f} "
              f"{peak / 2**20:>9.1f} {report.zopa:>9,} {report.pareto_frontier:>9,} "
              f"{ours:>8.3f} {theirs:>8} {ratio:>9}", flush=True)


if __name__ == "__main__":
    main()
