"""Deliver run data that kernels left on disk because MLflow was away when they ended.

``python -m hubforge.server_extension.replay [--spool DIR]`` replays every
pending entry (see :mod:`hubforge.server_extension.pending`) meant for
this process's MLflow (``MLFLOW_TRACKING_URI``, credentials from MLflow's own
variables): it opens the run if MLflow never did, sends the items through the
same batching queue kernels use (each batch checked against what the run holds,
so what did arrive is not stored twice), logs the artifacts, ends the run and
removes the entry. Runs of kernels that died without ending them are adopted
first and end KILLED. Then the fits kernels kept (trained, not yet logged when
they ended) are logged as child runs of their notebook's run (see
:mod:`hubforge.server_extension.fit_replay`). The user's server starts it whenever entries wait (see
:class:`hubforge.server_extension.app.Replayer`); people outside a hub can run
it by hand.

Exit status: 0 when nothing is left to send; 75 (EX_TEMPFAIL) when MLflow is
still away and entries stay for the next try; 2 on a usage error. One entry's
bad file never stops the others: it moves to ``rejected/`` with the reason.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import shutil
import sys
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from hubforge.contract import EX_TEMPFAIL
from hubforge.server_extension.fit_replay import FitReport, replay_fits
from hubforge.server_extension.kept_fits import list_fits, read_fit
from hubforge.server_extension.kernel.context import create_run_where_taken, experiment_named
from hubforge.server_extension.kernel.queue import TrackingQueue, refused
from hubforge.server_extension.pending import (
    PLACEHOLDER,
    PendingRun,
    adopt_dead,
    keep_refused,
    list_pending,
    read_items,
    read_pending,
    reject,
    spool_root,
    write_items,
    write_run,
)

__all__ = ["Report", "main", "replay", "waiting"]

log = logging.getLogger("hubforge.replay")
REPLAY_TAG = "hubforge.replay_id"


class MlflowAway(Exception):
    """MLflow did not answer; the entry stays for the next try."""


@dataclass
class Report:
    """What one replay did, entry by entry."""

    delivered: list[str] = field(default_factory=list)  # run ids completed
    left: list[str] = field(default_factory=list)  # entry ids still waiting
    rejected: list[str] = field(default_factory=list)  # entry ids moved aside
    skipped: list[str] = field(default_factory=list)  # entries for another MLflow
    records: int = 0  # metrics, params and tags sent (or found already there)
    fits: FitReport = field(default_factory=FitReport)  # kept fits (see fit_replay)


def waiting(root: Path, tracking_uri: str) -> bool:
    """Whether entries or kept fits for ``tracking_uri`` (or unreadable ones, to set aside)
    wait under ``root``: a look that never imports mlflow."""
    uri = tracking_uri.rstrip("/")
    for entries, read in ((list_pending, read_pending), (list_fits, read_fit)):
        for entry in entries(root):
            try:
                if read(entry).tracking_uri.rstrip("/") == uri:
                    return True
            except ValueError:
                return True
    return False


def replay(root: Path, tracking_uri: str, client: Any = None, timeout: float = 60.0) -> Report:
    """Replay the entries under ``root`` meant for ``tracking_uri``, oldest first.

    Stops at the first entry MLflow does not take for want of an answer: the
    later ones would meet the same outage. Holds ``root/.replay.lock`` meanwhile,
    so two replayers never send the same entry; a second one returns at once.
    """
    report = Report()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".replay.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("hubforge: another replay holds %s", root)
            return report
        if client is None:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri)
        for entry in list_pending(root):
            try:
                run = read_pending(entry)
                items = read_items(entry)
            except ValueError as exc:
                reject(root, entry, str(exc))
                log.warning("hubforge: pending run data %s set aside: %s", entry.name, exc)
                report.rejected.append(entry.name)
                continue
            if run.tracking_uri.rstrip("/") != tracking_uri.rstrip("/"):
                report.skipped.append(entry.name)
                continue
            try:
                report.records += _replay_entry(entry, run, items, client, timeout)
            except MlflowAway as exc:
                log.info("hubforge: MLflow still away (%s); %s waits", exc, entry.name)
                report.left.extend(e.name for e in list_pending(root) if e.name not in report.skipped)
                return report
            except Exception as exc:  # MLflow refused (deleted run, no permission): keep it, say why
                first = str(exc).splitlines()[0][:300] if str(exc) else ""
                reason = f"MLflow refused it: {type(exc).__name__}: {first}"
                reject(root, entry, reason)
                log.warning("hubforge: pending run data %s set aside: %s", entry.name, reason)
                report.rejected.append(entry.name)
                continue
            report.delivered.append(str(run.run_id))
        # Kept fits hang under runs the entries above may just have opened.
        report.fits = replay_fits(root, tracking_uri, client)
    return report


def _replay_entry(entry: Path, run: PendingRun, items: list[list[Any]], client: Any, timeout: float) -> int:
    """Deliver one entry; remove it when done. MlflowAway when MLflow does not answer."""
    if run.run_id is None:
        run.run_id = _open_run(client, run)
        write_run(entry, run)
    else:
        _call(client.get_run, run.run_id)  # away: fail fast, before the queue's retries; gone: refused
    run_id = run.run_id
    items = [[i[0], run_id if i[1] == PLACEHOLDER else i[1], *i[2:]] for i in items]
    if items:

        def keep(refused_items: list[list[Any]], why: str) -> None:
            reasons = [f"{i[0]} {i[2]}: {why}" for i in refused_items]
            keep_refused(entry.parent.parent, run, refused_items, reasons)

        queue = TrackingQueue(
            lambda: client, spool_dir=entry / ".spool", flush_interval=0.0, max_backoff=2.0, on_refused=keep
        )
        queue.resend(items)
        done = queue.flush(timeout)
        if not done:
            write_items(entry, queue.detach())
            raise MlflowAway(queue.last_error or "no answer")
        queue.close(1.0)
        shutil.rmtree(entry / ".spool", ignore_errors=True)
        write_items(entry, [])
        run.dropped += queue.dropped
    if run.dropped:
        _call(client.set_tag, run_id, "hubforge.dropped", str(run.dropped))
    artifacts = entry / "artifacts"
    for file in sorted(p for p in artifacts.rglob("*") if p.is_file()) if artifacts.is_dir() else ():
        folder = file.parent.relative_to(artifacts).as_posix()
        _call(client.log_artifact, run_id, str(file), None if folder == "." else folder)
        file.unlink()
    if run.status is not None:
        _call(client.set_terminated, run_id, run.status, run.end_time or None)
    shutil.rmtree(entry)
    log.info("hubforge: delivered %d kept records to run %s", len(items), run_id)
    return len(items)


def _open_run(client: Any, run: PendingRun) -> str:
    """The run MLflow never opened: found by its replay id (a replay cut short), else created."""
    get_by_name, create = partial(_call, client.get_experiment_by_name), partial(_call, client.create_experiment)
    experiment_id = experiment_named(get_by_name, create, run.experiment_name)
    found = _call(client.search_runs, [experiment_id], f"tags.`{REPLAY_TAG}` = '{run.id}'", max_results=1)
    if found:
        return str(found[0].info.run_id)
    tags = {**run.tags, REPLAY_TAG: run.id}
    create = partial(_call, client.create_run)
    created = create_run_where_taken(create, experiment_id, tags, start_time=run.start_time or None)
    return str(created.info.run_id)


def _call(method: Any, *args: Any, **kwargs: Any) -> Any:
    """Call MLflow; MlflowAway when it did not answer, its own exception when it refused."""
    try:
        return method(*args, **kwargs)
    except Exception as exc:
        if refused(exc):
            raise
        raise MlflowAway(str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__) from exc


def main(argv: list[str] | None = None) -> int:
    """The command line: replay, print one line per entry, return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m hubforge.server_extension.replay", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--spool",
        type=Path,
        default=None,
        help="the spool root (default: HUBFORGE_SPOOL_DIR, else the jupyter data dir's hubforge/spool)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for one entry's records (default 60)"
    )
    args = parser.parse_args(argv)
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        parser.error("MLFLOW_TRACKING_URI is not set: where should the kept run data go?")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    root = args.spool or spool_root()
    adopt_dead(root)
    if not waiting(root, uri):
        print(f"nothing waits for {uri}")
        return 0
    report = replay(root, uri, timeout=args.timeout)
    for run_id in report.delivered:
        print(f"delivered: run {run_id}")
    for name in report.rejected:
        print(f"set aside: {root / 'rejected' / name} (see reason.txt)")
    for name in report.left:
        print(f"waiting: {name} (MLflow away)")
    for name in report.fits.logged:
        print(f"logged: kept fit {name}")
    for name in report.fits.rejected:
        print(f"set aside: {root / 'rejected' / name} (see reason.txt)")
    for name in report.fits.left:
        print(f"waiting: kept fit {name} (MLflow away)")
    return EX_TEMPFAIL if report.left or report.fits.left else 0


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        sys.exit(main())
