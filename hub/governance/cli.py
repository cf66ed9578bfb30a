"""``hubforge audit verify`` and ``hubforge audit report``: check the audit trail, report on it.

Registered under the ``hubforge.commands`` entry-point group. ``verify``: exit status 0
when the chain is intact, 1 when it was tampered with (the first problem on one line),
2 for an error that stopped the check (no database, no key). ``report``: a compliance
report of a time range as HTML, JSON or CSV, on stdout or in a file; a bad date, an
empty range or an unreachable database is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hubforge.config import load_config
from hubforge.errors import HubforgeError, Invalid

__all__ = ["REPORT_FORMATS", "TAMPERED_EXIT", "cmd_audit_report", "cmd_audit_verify", "register"]

#: ``hubforge audit report --format``: its choices.
REPORT_FORMATS = ("html", "json", "csv")

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


def cmd_audit_report(args: argparse.Namespace) -> int:
    """Write the compliance report of ``[--from, --to)`` in ``--format``."""
    from .report import load_report, parse_when, to_csv, to_json
    from .report_html import render_html
    from .store import GovernanceStore

    start, end = parse_when(args.start, "--from"), parse_when(args.end, "--to")
    if start >= end:
        raise Invalid("--from must come before --to (the report covers [from, to))")
    db_url = args.db_url or load_config(getattr(args, "config", None)).db_url("governance")
    store = GovernanceStore(db_url)
    try:
        report = load_report(store, start, end)
    finally:
        store.dispose()
    text = {"html": render_html, "json": to_json, "csv": to_csv}[args.format](report)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        raise HubforgeError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    print(f"wrote {args.output}: {report['events']} events from {report['from']} to {report['to']}")
    return 0


def register(
    subparsers: argparse._SubParsersAction,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add ``audit verify`` and ``audit report`` to ``hubforge``'s subcommands."""
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
    report = actions.add_parser(
        "report",
        parents=list(parents),
        help="a compliance report of the audit trail for a time range: deployments and who approved them, "
        "data access, failed logins, role and group changes, policy denials, counts and a timeline",
    )
    when = "an ISO 8601 date or time, UTC unless it names a zone (2026-05-01, 2026-05-01T12:00Z)"
    report.add_argument("--from", dest="start", metavar="DATE", required=True, help=f"the first moment covered: {when}")
    report.add_argument("--to", dest="end", metavar="DATE", required=True, help=f"the end, not covered: {when}")
    report.add_argument("--format", choices=REPORT_FORMATS, default="html", help="html (default), json or csv")
    report.add_argument("--output", metavar="FILE", help="write the report here (default: stdout)")
    report.add_argument("--db-url", metavar="URL", help="the governance database (default: the platform config's)")
    report.set_defaults(func=cmd_audit_report)
