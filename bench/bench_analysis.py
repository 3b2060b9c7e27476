"""Measure the outcome-space analysis on synthetic scenarios of 10^4, 10^5 and 10^6 packages.

    .venv/bin/python bench/bench_analysis.py

Prints seconds and peak traced memory (numpy allocations included) for each size.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import synthetic_scenario

from detente.analysis import analyze

SIZES = {10**4: (4, 10), 10**5: (5, 10), 10**6: (6, 10)}


def main() -> None:
    print(f"{'packages':>10} {'seconds':>8} {'peak MiB':>9} {'ZOPA':>8} {'frontier':>9}")
    for total, (n_issues, options) in SIZES.items():
        scenario = synthetic_scenario(n_issues, options, seed=1)
        tracemalloc.start()
        start = time.perf_counter()
        report = analyze(scenario)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert report.packages == total
        print(f"{total:>10,} {seconds:>8.2f} {peak / 2**20:>9.1f} {report.zopa:>8,} "
              f"{report.pareto_frontier:>9,}")


if __name__ == "__main__":
    main()
