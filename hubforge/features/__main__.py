"""``python -m hubforge.features``: the feature store's commands, in the Feast environment.

The platform's ``hubforge features ...`` runs this with the Feast environment's Python
(:mod:`hubforge.features.environment`); it reads the same platform config
(``HUBFORGE_CONFIG``, ``HUBFORGE_DATA``). Errors are one line, exit status 2, as the
``hubforge`` command's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hubforge.config import load_config
from hubforge.errors import CLI_EXIT, HubforgeError

from .apply import apply_demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubforge features", description="The feature store (Feast).")
    sub = parser.add_subparsers(dest="command", metavar="ACTION", required=True)
    apply = sub.add_parser("apply", help="apply the demo feature repository and fill its online store")
    apply.add_argument("--config", default=None, help="platform config file (default: HUBFORGE_CONFIG)")
    apply.add_argument("--force", action="store_true", help="generate, apply and materialize again, changed or not")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status."""
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
        apply_demo(cfg, log=lambda line: print(f"[hubforge] {line}", flush=True), force=args.force)
    except HubforgeError as exc:
        print(f"hubforge: error: {exc}", file=sys.stderr)
        return CLI_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
