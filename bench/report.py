"""Benchmark results and the table they are printed as."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """One benchmark: hubforge's samples against the baseline's, in the same unit."""

    name: str
    unit: str
    ours: list[float]
    baseline: list[float]
    baseline_name: str

    @property
    def ratio(self) -> float:
        """Median of ours over median of the baseline (below 1 is faster)."""
        return statistics.median(self.ours) / statistics.median(self.baseline)


def print_table(results: list[Result]) -> None:
    """Print the results as a fixed-width table."""
    header = f"{'benchmark':<34} {'hubforge':>10} {'baseline':>10} {'ratio':>7}  baseline is"
    print(header)
    print("-" * len(header))
    for r in results:
        ours, base = statistics.median(r.ours), statistics.median(r.baseline)
        print(f"{r.name:<34} {ours:>8.2f}{r.unit:<2} {base:>8.2f}{r.unit:<2} {r.ratio:>6.2f}x  {r.baseline_name}")
