"""The serving service's own folder: its routes, its copies of the models, its processes' files.

Layout of the state folder (mode 0700, the service's account alone):

- ``endpoints.json``: every endpoint (:meth:`~.model.Endpoint.to_json`), rewritten
  whole on each change: a temporary file, ``fsync``, ``rename``, then the folder's
  ``fsync``, so a crash leaves the old routes or the new ones, never half of either;
- ``models/<hex>/``: the service's copy of each deployed model folder, named by its
  digest: the scoring servers load these, never the folder a deploy named, so what
  runs is what was checked (:meth:`ServingState.snapshot`, :meth:`ServingState.verify`);
- ``home/``: the scoring processes' ``HOME``; ``logs/``: one log file per process;
  ``run/``: their Unix sockets (reachable by the service's account alone).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from hubforge.errors import ConfigError, Conflict, HubforgeError, Invalid, Unavailable

from .digest import copy_tree, tree_digest
from .model import Endpoint, Release, endpoint_from_json

__all__ = ["STATE_FILE", "ServingState"]

STATE_FILE = "endpoints.json"
#: The format of ``endpoints.json``; a file of another format is refused, not guessed at.
FORMAT = 1

EndpointKey = tuple[str, str]


class ServingState:
    """The state folder ``folder`` (created, mode 0700, on first use)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        try:
            for sub in ("", "models", "home", "logs", "run"):
                (self.folder / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{self.folder}: cannot create the serving state folder: {exc.strerror}") from exc

    @property
    def path(self) -> Path:
        """The routes' file."""
        return self.folder / STATE_FILE

    @property
    def home(self) -> Path:
        """The scoring processes' home folder."""
        return self.folder / "home"

    @property
    def logs(self) -> Path:
        """The scoring processes' log folder."""
        return self.folder / "logs"

    @property
    def sockets(self) -> Path:
        """The scoring processes' socket folder."""
        return self.folder / "run"

    def load(self) -> dict[EndpointKey, Endpoint]:
        """The saved endpoints (none before the first save); ConfigError if unreadable."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.path}: unreadable serving state: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("endpoints"), list):
            raise ConfigError(f"{self.path}: not a serving state file of format {FORMAT}")
        try:
            endpoints = [endpoint_from_json(item) for item in data["endpoints"]]
        except Invalid as exc:
            raise ConfigError(f"{self.path}: {exc}") from exc
        return {endpoint.key: endpoint for endpoint in endpoints}

    def save(self, endpoints: Mapping[EndpointKey, Endpoint]) -> None:
        """Replace the saved endpoints with ``endpoints``, atomically and durably."""
        data = {"format": FORMAT, "endpoints": [endpoints[key].to_json() for key in sorted(endpoints)]}
        temporary = self.folder / f".{STATE_FILE}.{secrets.token_hex(4)}.tmp"
        try:
            with open(temporary, "x", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
            _fsync_folder(self.folder)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise Unavailable(f"cannot save the serving state in {self.folder}: {exc.strerror}") from exc

    def snapshot(self, source: str, digest: str) -> str:
        """The service's copy of ``source`` whose digest is ``digest``, made if need be.

        Conflict when ``source`` does not hash to ``digest`` (changed since approval);
        Invalid when it cannot be read or holds links.
        """
        copy = self._copy_path(digest)
        if copy.is_dir():
            with contextlib.suppress(HubforgeError):
                if tree_digest(copy) == digest:
                    return str(copy)
            shutil.rmtree(copy)  # damaged: copy it again from the source
        if not (Path(source) / "MLmodel").is_file():
            raise Invalid(f"field 'model_path': {source} is not an MLflow model folder (no MLmodel file)")
        partial = self.folder / "models" / f".partial-{secrets.token_hex(4)}"
        try:
            got = copy_tree(source, partial)
            if got != digest:
                raise Conflict(f"field 'digest': {source} hashes to {got}, not the approved {digest}: refused")
            os.replace(partial, copy)
        except OSError as exc:
            raise Unavailable(f"cannot copy {source} into the serving state: {exc.strerror}") from exc
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return str(copy)

    def verify(self, release: Release) -> None:
        """Refuse (Conflict) to serve ``release`` whose folder no longer hashes to its digest."""
        try:
            got = tree_digest(release.path)
        except Invalid as exc:
            raise Conflict(f"version {release.version} of {release.model} is refused: {exc}") from exc
        if got != release.digest:
            raise Conflict(
                f"version {release.version} of {release.model} is refused: its folder {release.path} "
                f"hashes to {got}, not {release.digest}"
            )

    def prune(self, keep: Iterable[Release]) -> None:
        """Remove the model copies no release in ``keep`` uses."""
        wanted = {self._copy_path(release.digest) for release in keep}
        for entry in (self.folder / "models").iterdir():
            if entry not in wanted and not entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)

    def _copy_path(self, digest: str) -> Path:
        return self.folder / "models" / digest.removeprefix("sha256:")


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
