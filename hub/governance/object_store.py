"""The approved copy in the platform's object store, where KServe downloads what it serves.

On Kubernetes the model server runs in its own pod and reads its model from a storage URI,
not from the governance service's disk. :class:`ObjectStoreCopies` uploads the approved
copy (:class:`~.snapshots.Snapshot`, already checked against the approved digest) under
``<backends.object_store_url>/deployments/<model folder>/v<version>-<digest>/`` with
MLflow's own artifact repositories (``s3://`` through boto3, with ``MLFLOW_S3_ENDPOINT_URL``
and the usual AWS settings; ``gs://`` through google-cloud-storage), the same code and
credentials MLflow's server uses for that store. The folder name carries the digest, so a
path is never reused for other files, and the upload is checked (every file there, with
its size) before its URI is handed to KServe: a half-written copy is never served.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from hubforge.config import KSERVE_STORES
from hubforge.errors import ConfigError, Unavailable

from .snapshots import Snapshot

__all__ = ["ObjectStoreCopies", "PublishFailed"]

#: The folder under the object store's URL that governance's copies live in.
PREFIX = "deployments"


class PublishFailed(Unavailable):
    """The approved copy could not be put in the object store: nothing is deployed."""


class ObjectStoreCopies:
    """Puts approved copies under ``base_url`` (``s3://bucket/prefix`` or ``gs://...``)."""

    def __init__(self, base_url: str) -> None:
        if not base_url.startswith(KSERVE_STORES):
            raise ConfigError(f"the object store for approved models must be {' or '.join(KSERVE_STORES)}, "
                              f"not {base_url!r}")  # fmt: skip
        self.base_url = base_url.rstrip("/")

    def uri(self, snapshot: Snapshot) -> str:
        """Where ``snapshot`` goes: its model's folder and its own (version and digest) name."""
        return f"{self.base_url}/{PREFIX}/{snapshot.path.parent.name}/{snapshot.path.name}"

    def publish(self, snapshot: Snapshot) -> str:
        """Upload ``snapshot`` and check it arrived whole; its URI (blocking)."""
        # Imported here: MLflow's artifact repositories are heavy and only Kubernetes needs them.
        from mlflow.exceptions import MlflowException
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        uri = self.uri(snapshot)
        what = f"{snapshot.model!r} version {snapshot.version} to {uri}"
        try:
            repo = get_artifact_repository(uri)
            repo.log_artifacts(str(snapshot.path))
            stored = _listing(repo)
        except MlflowException as exc:
            raise PublishFailed(f"cannot copy {what}: {exc.message.splitlines()[0][:300]}") from exc
        except Exception as exc:  # boto3's and google's errors have no common base but Exception
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise PublishFailed(f"cannot copy {what}: {first}") from exc
        expected = _local_listing(snapshot.path)
        if stored != expected:
            missing = sorted(set(expected) - set(stored)) or sorted(k for k in expected if stored.get(k) != expected[k])
            raise PublishFailed(f"the copy of {what} is incomplete: {', '.join(missing[:3])} did not arrive whole")
        return uri


def _local_listing(root: Path) -> dict[str, int]:
    """Relative path -> size of every file under ``root``."""
    out: dict[str, int] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            out[PurePosixPath(path.relative_to(root)).as_posix()] = path.stat().st_size
    return out


def _listing(repo: object, path: str | None = None) -> dict[str, int]:
    """Relative path -> size of every file in the artifact repository ``repo``."""
    out: dict[str, int] = {}
    for info in repo.list_artifacts(path):  # type: ignore[attr-defined]
        if info.is_dir:
            out.update(_listing(repo, info.path))
        else:
            out[info.path] = int(info.file_size or 0)
    return out
