"""Run every benchmark and print one table of ratios (``make bench``)."""

from __future__ import annotations

import argparse
import sys

from bench import (
    accounts,
    allocator,
    approval,
    apps,
    audit,
    extension_start,
    features,
    mlflow_gate,
    mlflow_search,
    recovery,
    scheduler,
    serving,
    spawnstorm,
    startup,
    tracking,
)
from bench.report import Result, print_table

SUITES = {
    "startup": startup.run,
    "allocator": allocator.run,
    "spawnstorm": spawnstorm.run,
    "extension": extension_start.run,
    "tracking": tracking.run,
    "mlflow": mlflow_gate.run,
    "search": mlflow_search.run,
    "accounts": accounts.run,
    "audit": audit.run,
    "serving": serving.run,
    "approval": approval.run,
    "features": features.run,
    "apps": apps.run,
    "scheduler": scheduler.run,
    "recovery": recovery.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side (the median is reported)")
    parser.add_argument("suites", nargs="*", help=f"suites to run (default: all of {', '.join(SUITES)})")
    args = parser.parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite {unknown[0]!r} (known: {', '.join(SUITES)})")
    results: list[Result] = []
    for name in args.suites or list(SUITES):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results.extend(SUITES[name](args.repeat))
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
