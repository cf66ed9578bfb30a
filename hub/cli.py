"""The ``hubforge up`` subcommand: start the platform on this machine.

Registered under the ``hubforge.commands`` entry-point group (setup.cfg), so the
shared package's command line never imports the hub side.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from hubforge.config import load_config

__all__ = ["cmd_up", "register"]


def cmd_up(args: argparse.Namespace) -> int:
    """Run the platform until Ctrl-C; the launcher's exit status."""
    from .launcher import Platform  # JupyterHub and the services only for this command

    cfg = load_config(getattr(args, "config", None))
    log = lambda line: print(f"[hubforge] {line}", flush=True)  # noqa: E731
    return Platform(cfg, log=log, keep_servers=bool(getattr(args, "keep_servers", False))).run()


def register(
    subparsers: argparse._SubParsersAction,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add ``up`` to ``hubforge``'s subcommands (``parents``: the common ``--config``)."""
    up = subparsers.add_parser("up", parents=list(parents), help="start the platform on this machine (Ctrl-C stops it)")
    up.add_argument(
        "--keep-servers",
        action="store_true",
        help="when stopped, leave people's servers (and their kernels) and the proxy running for the "
        "next `hubforge up` to take over: how hubforge is upgraded without ending anybody's work",
    )
    up.set_defaults(func=cmd_up)
