"""Log kept fits (see :mod:`.kept_fits`) as child runs of their notebook's run.

A process that logs fits (a kernel's fit logger, :mod:`.fit_logger`, or the
replay command, :mod:`.replay`) loads mlflow, lets MLflow's autologging patch
each fit's library (hubforge's router records the patch function it makes), and
runs that patch function over the kept, already fitted estimator exactly as the
kernel would have (see :class:`hubforge.server_extension.kernel.autolog.Autolog`),
into the fit's own run when the kernel opened one.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kept_fits import KeptFit, claim, list_fits, owned_elsewhere, read_fit, reject_fit
from .requirements_cache import REQUIREMENTS

__all__ = ["AWAY", "BUSY", "LOGGED", "FitLogging", "FitReport", "replay_fits"]

log = logging.getLogger("hubforge.replay")
REPLAY_TAG = "hubforge.replay_id"
#: What :meth:`FitLogging.log` says of an entry (or ``"rejected: <why>"``).
LOGGED, AWAY, BUSY = "logged", "away", "busy"


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

    def keep(self, job: Any, owner: tuple[int, float] | None) -> Path:
        raise NotImplementedError("a kept fit is logged where it is, not kept again")


class FitLogging:
    """mlflow and hubforge's router set up in this process, ready to log kept fits.

    Model requirements are remembered in ``requirements`` (see :mod:`.requirements_cache`);
    ``warm`` infers scikit-learn's first, so that the first fit handed over finds them.
    """

    def __init__(self, client: Any, requirements: Path | None = None, warm: bool = False):
        import mlflow

        from .kernel import autolog as autologging
        from .requirements_cache import RequirementsCache

        self.client = client
        self.session = _Kept()
        self.router = autologging.Autolog(self.session, mlflow, thread=False)
        self.router.requirements_cache = RequirementsCache(requirements) if requirements else None
        autologging.install(self.router)
        if warm:
            self._warm_up(autologging)
        mlflow.autolog(silent=True)

    def _warm_up(self, autologging: Any) -> None:
        """scikit-learn's model requirements, inferred from a tiny model (before autolog patches it)."""
        try:
            from sklearn.dummy import DummyClassifier
        except ImportError:
            return
        model = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
        from .kernel.training import FitJob, requirements_key

        job = FitJob(
            "sklearn", print, {}, print, (model,), {}, model, "DummyClassifier", 0, 0,
            requirements_key=requirements_key((model,)),
        )  # fmt: skip
        self.router.warm_up(job)

    def log(self, root: Path, entry: Path, mine: bool = False) -> str:
        """Log one kept fit and remove it: LOGGED, AWAY (kept), BUSY (another process has it),
        or ``"rejected: <why>"`` (moved to ``rejected/``). ``mine``: this process owns it."""
        from .kernel.queue import refused

        with claim(entry) as held:
            if not held:
                return BUSY
            try:
                fit = read_fit(entry)
            except ValueError as exc:
                return self._reject(root, entry, str(exc))
            if not mine and owned_elsewhere(fit):
                return BUSY
            try:
                self.session.opened = _parent(self.client, fit)
            except Exception as exc:
                if not refused(exc):
                    return AWAY
                self.session.opened = None
            if self.session.opened is None:
                return self._reject(root, entry, "the notebook's run is not in MLflow")
            try:
                job = _job(self.router, fit, entry)
            except Exception as exc:
                return self._reject(root, entry, f"cannot load the fitted objects: {type(exc).__name__}: {exc}"[:300])
            self.session.tags = fit.tags
            failed = self.router.failed
            if not self.router.log_fit(job):
                return AWAY
            if self.router.failed > failed:
                return self._reject(root, entry, self.router.notices[-1])
            shutil.rmtree(entry)
            log.info("hubforge: logged the %s fit of %s", fit.name, fit.experiment_name)
            return LOGGED

    @staticmethod
    def _reject(root: Path, entry: Path, why: str) -> str:
        reject_fit(root, entry, why)
        return f"rejected: {why}"


def replay_fits(root: Path, tracking_uri: str, client: Any) -> FitReport:
    """Log every kept fit under ``root`` meant for ``tracking_uri`` and no longer owned by a
    live fit logger; stop at the first outage."""
    report = FitReport()
    entries = []
    for entry in list_fits(root):
        try:
            fit = read_fit(entry)
        except ValueError:
            entries.append(entry)  # set aside below, with the reason
            continue
        if fit.tracking_uri.rstrip("/") == tracking_uri.rstrip("/") and not owned_elsewhere(fit):
            entries.append(entry)
    if not entries:
        return report
    logging_ = FitLogging(client, root / REQUIREMENTS)
    for number, entry in enumerate(entries):
        outcome = logging_.log(root, entry)
        if outcome == AWAY:
            report.left.extend(e.name for e in entries[number:])
            return report
        if outcome == LOGGED:
            report.logged.append(entry.name)
        elif outcome != BUSY:
            report.rejected.append(f"fit-{entry.name}")
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

    from .kernel.training import FitJob, requirements_key

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
        requirements_key=requirements_key(tuple(args)), child_run_id=fit.child_run_id,
    )  # fmt: skip
