"""Log the fits kernels kept (see :mod:`.kept_fits`) as child runs of their notebook's run.

Run by the replay command (:mod:`.replay`) after the kept run data, in the same
child process of the user's server: it loads mlflow and the fit's library, lets
MLflow's autologging patch that library (hubforge's router records the patch
function it makes), and runs that patch function over the kept, already fitted
estimator exactly as the kernel would have (see
:class:`hubforge.server_extension.kernel.autolog.Autolog`).
"""

from __future__ import annotations

import importlib
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kept_fits import KeptFit, list_fits, read_fit, reject_fit

__all__ = ["FitReport", "replay_fits"]

log = logging.getLogger("hubforge.replay")
REPLAY_TAG = "hubforge.replay_id"


@dataclass
class FitReport:
    """What one pass over the kept fits did."""

    logged: list[str] = field(default_factory=list)  # entry ids
    rejected: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # MLflow away


class _Kept:
    """The notebook's run a kept fit goes under, as :class:`~.kernel.autolog.Session` says it."""

    enabled = True
    busy = False

    def __init__(self) -> None:
        self.opened: tuple[str, str] | None = None
        self.tags: dict[str, str] = {}

    def session_run(self) -> tuple[str, str] | None:
        return self.opened

    def child_tags(self) -> dict[str, str]:
        return dict(self.tags)


def replay_fits(root: Path, tracking_uri: str, client: Any) -> FitReport:
    """Log every kept fit under ``root`` meant for ``tracking_uri``; stop at the first outage."""
    report = FitReport()
    entries = list_fits(root)
    if not entries:
        return report
    import mlflow

    from .kernel import autolog as autologging
    from .kernel.queue import refused

    session = _Kept()
    router = autologging.Autolog(session, mlflow, thread=False)
    autologging.install(router)
    mlflow.autolog(silent=True)
    for entry in entries:
        try:
            fit = read_fit(entry)
        except ValueError as exc:
            report.rejected.append(reject_fit(root, entry, str(exc)).name)
            continue
        if fit.tracking_uri.rstrip("/") != tracking_uri.rstrip("/"):
            continue
        try:
            session.opened = _parent(client, fit)
        except Exception as exc:
            if not refused(exc):
                report.left.extend(e.name for e in list_fits(root))
                return report
            session.opened = None
        if session.opened is None:
            report.rejected.append(reject_fit(root, entry, "the notebook's run is not in MLflow").name)
            continue
        try:
            job = _job(router, fit, entry)
        except Exception as exc:
            why = f"cannot load the fitted objects: {type(exc).__name__}: {exc}"[:300]
            report.rejected.append(reject_fit(root, entry, why).name)
            continue
        session.tags = fit.tags
        failed = router.failed
        if not router.log_fit(job):
            report.left.extend(e.name for e in list_fits(root))
            return report
        if router.failed > failed:
            report.rejected.append(reject_fit(root, entry, router.notices[-1]).name)
            continue
        shutil.rmtree(entry)
        report.logged.append(entry.name)
        log.info("hubforge: logged the kept %s fit of %s", fit.name, fit.experiment_name)
    return report


def _parent(client: Any, fit: KeptFit) -> tuple[str, str] | None:
    """(run id, experiment id) of the notebook's run, or None when MLflow has no such run."""
    if fit.run_id:
        run = client.get_run(fit.run_id)
        return run.info.run_id, run.info.experiment_id
    experiment = client.get_experiment_by_name(fit.experiment_name)
    if experiment is None:
        return None
    found = client.search_runs([experiment.experiment_id], f"tags.`{REPLAY_TAG}` = '{fit.replay_id}'", max_results=1)
    return (found[0].info.run_id, experiment.experiment_id) if found else None


def _job(router: Any, fit: KeptFit, entry: Path) -> Any:
    """The kept fit as a job for ``router``: its objects unpickled, its library patched."""
    import cloudpickle

    from .kernel.autolog import FitJob, _requirements_key

    importlib.import_module(fit.integration)  # MLflow's import hook patches it: the router learns how
    patch = router.patches.get(fit.integration)
    if patch is None:
        raise LookupError(f"MLflow does not autolog {fit.integration} here")
    added = bool(fit.cwd) and fit.cwd not in sys.path
    if added:
        sys.path.insert(0, fit.cwd)  # the notebook's own modules, as its kernel imported them
    try:
        args, kwargs, result = cloudpickle.loads((entry / "fit.pkl").read_bytes())
    finally:
        if added:
            sys.path.remove(fit.cwd)
    original = getattr(type(args[0]), fit.method, None) if args else None

    def trained(*_args: Any, **_kwargs: Any) -> Any:
        return result

    trained.__name__ = fit.method
    return FitJob(
        fit.integration, patch, {"mlflow.autologging": fit.integration}, original or trained,
        tuple(args), dict(kwargs), result, fit.name, fit.started_ms, fit.ended_ms,
        requirements_key=_requirements_key(tuple(args)),
    )  # fmt: skip
