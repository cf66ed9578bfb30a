"""The copy of a model version that governance owns, taken when a deployment is approved.

Run owners can still change their run's artifacts after an approval; what is served is
therefore never MLflow's copy but this one, made by the governance service at approval
time, in a folder only the platform's account reads (``<data>/deployments/``). Its
digest (:func:`hubforge.hub.serving.digest.tree_digest` of the copy) is what the
approval binds to: the router checks it again before serving, and a version whose
artifacts changed gives another digest, which needs a new approval.

The files are downloaded from MLflow as the governance service's own identity (read-only,
every model), through the same permission gate as everyone.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hubforge.errors import Unavailable
from hubforge.hub.serving.digest import copy_tree, tree_digest

__all__ = ["ModelSnapshots", "NoSnapshots", "Snapshot", "SnapshotFailed", "SnapshotSource"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SnapshotFailed(Unavailable):
    """The approved copy could not be made: the approval is not taken."""


@dataclass(frozen=True)
class Snapshot:
    """A model version's files as governance keeps them, and their digest."""

    model: str
    version: str
    path: Path
    digest: str


class SnapshotSource(Protocol):
    """Takes the approved copy of ``model`` ``version`` (blocking; run in a worker thread)."""

    def take(self, model: str, version: str) -> Snapshot: ...


class NoSnapshots:
    """The source of a service that reads no model registry: no copy, so no approval."""

    def take(self, model: str, version: str) -> Snapshot:
        """Refuse, saying why."""
        raise SnapshotFailed("the governance service reads no model registry (MLflow is not enabled)")


def _folder_name(model: str) -> str:
    """A file-system-safe, collision-free folder name for ``model``."""
    suffix = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', model)[:80]}-{suffix}"


class ModelSnapshots:
    """Approved copies of model versions under ``root``, downloaded from MLflow at ``tracking_uri``."""

    def __init__(self, root: Path, tracking_uri: str) -> None:
        self.root = Path(root)
        self.tracking_uri = tracking_uri

    def take(self, model: str, version: str) -> Snapshot:
        """Download ``model`` ``version``'s files and keep a copy: its path and digest (blocking)."""
        # Imported here: MLflow's client is heavy, and a service without MLflow never needs it.
        from mlflow import MlflowClient
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException

        what = f"model {model!r} version {version}"
        folder = self.root / _folder_name(model)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="download-", dir=folder) as scratch:
            try:
                # Resolved here, not by download_artifacts: it would ask the process-wide
                # registry (none is set in the service), not the one at tracking_uri.
                client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
                source = client.get_model_version_download_uri(model, version)
                local = download_artifacts(artifact_uri=source, dst_path=scratch, tracking_uri=self.tracking_uri)
            except MlflowException as exc:
                raise SnapshotFailed(f"cannot copy {what} from MLflow: {exc.message.splitlines()[0][:300]}") from exc
            except OSError as exc:
                raise SnapshotFailed(f"cannot copy {what} from MLflow: {exc}") from exc
            staging = Path(tempfile.mkdtemp(prefix="copy-", dir=folder))
            staging.rmdir()  # copy_tree makes it
            try:
                digest = copy_tree(local, staging)
            except Exception:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        final = folder / f"v{version}-{digest.removeprefix('sha256:')[:16]}"
        if final.exists():
            shutil.rmtree(staging, ignore_errors=True)
            if tree_digest(final) != digest:
                raise SnapshotFailed(f"the kept copy of {what} at {final} was altered; remove it")
        else:
            staging.rename(final)
        return Snapshot(model, version, final, digest)
