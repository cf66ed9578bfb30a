"""``hubforge audit verify``: check the audit trail's hash chain and signed checkpoints.

Registered under the ``hubforge.commands`` entry-point group. Exit status 0 when the
chain is intact, 1 when it was tampered with (the first problem on one line), 2 for
an error that stopped the check (no database, no key).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from hubforge.config import load_config

__all__ = ["TAMPERED_EXIT", "cmd_audit_verify", "register"]

#: The exit status of ``hubforge audit verify`` when it found tampering.
TAMPERED_EXIT = 1


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Verify the whole chain; print one line saying what was found."""
    from .audit import KEY_FILE, load_public_key, verify
    from .store import GovernanceStore

    db_url, public_key = args.db_url, args.public_key
    if db_url is None or public_key is None:
        cfg = load_config(getattr(args, "config", None))
        db_url = db_url or cfg.db_url("governance")
        public_key = public_key or str(cfg.data_dir / f"{KEY_FILE}.pub")
    store = GovernanceStore(db_url)
    try:
        verdict = verify(store, load_public_key(public_key))
    finally:
        store.dispose()
    if verdict.intact:
        print(f"ok: {verdict.records} records, {verdict.checkpoints} signed checkpoints, the chain is intact")
        return 0
    print(f"tampered: {verdict.problem}")
    return TAMPERED_EXIT


def register(
    subparsers: argparse._SubParsersAction,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add ``audit verify`` to ``hubforge``'s subcommands."""
    audit = subparsers.add_parser("audit", help="the audit trail")
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "verify",
        parents=list(parents),
        help="check the audit trail's hash chain and signed checkpoints; exit 1 naming the first tampering",
    )
    check.add_argument("--db-url", metavar="URL", help="the governance database (default: the platform config's)")
    check.add_argument(
        "--public-key", metavar="PATH", help="the audit signing key's public half (default: in the data folder)"
    )
    check.set_defaults(func=cmd_audit_verify)
