"""The router: the endpoints, their scoring processes, and every change to them.

:class:`Router` is the plain class behind the handlers. A scoring request picks a
release by :func:`~.model.choose` and is forwarded to that release's process. A change
(deploy, promote, rollback, delete) is a pure transition of :mod:`.model`, then the work
it needs (the service's copy of the model folder, checked against its digest; the new
process, started and answering ``/ping``), and only then is it committed: saved
(:class:`~.state.ServingState`), swapped in for the next request, and the processes and
copies nothing uses any more removed. A change that fails leaves the routes as they were.
Changes to one endpoint are serialised; commits of all endpoints are too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from hubforge.errors import LaunchError, NotFound, Refusal, Unavailable

from . import model
from .model import Endpoint, Release
from .scoring import ScoringPool
from .state import ServingState
from .upstream import Answer, UpstreamError

__all__ = ["Router"]

EndpointKey = tuple[str, str]
#: The header a scoring request's content type is forwarded in (no other header is:
#: never the caller's token).
FORWARDED = "Content-Type"


class Router:
    """The routes kept in ``state``, served by ``pool``'s processes.

    ``draw``: a uniform number in [0, 1) per scoring request (tests pass a seeded one).
    """

    def __init__(
        self,
        state: ServingState,
        pool: ScoringPool,
        *,
        draw: Callable[[], float] = random.random,
        log: logging.Logger | None = None,
    ) -> None:
        self.state = state
        self.pool = pool
        self.draw = draw
        self.log = log or logging.getLogger("hubforge.serving")
        self.endpoints: dict[EndpointKey, Endpoint] = {}
        self._locks: dict[EndpointKey, asyncio.Lock] = {}
        self._commit = asyncio.Lock()
        self._pending: list[Release] = []

    def load(self) -> None:
        """Read the saved routes (the processes start in :meth:`restore`)."""
        self.endpoints = self.state.load()

    async def restore(self) -> None:
        """Start the processes of every saved route (digests checked first), side by side.

        A release that fails (its folder changed, its process did not start) is logged and
        left out; its route answers 503 with the reason until it is fixed or rolled back.
        """
        releases = {r.key: r for e in self.endpoints.values() for r in e.releases()}
        results = await asyncio.gather(*(self.pool.ensure(r) for r in releases.values()), return_exceptions=True)
        for release, result in zip(releases.values(), results, strict=True):
            if isinstance(result, BaseException):
                self.log.error("Not serving %s version %s: %s", release.model, release.version, result)
            else:
                self.log.info("Serving %s version %s on %s", release.model, release.version, result.address)

    def endpoint(self, name: str, target: str) -> Endpoint:
        """The endpoint ``name`` on ``target`` (NotFound if none)."""
        endpoint = self.endpoints.get((name, target))
        if endpoint is None:
            raise NotFound(f"no {target} endpoint named {name!r}")
        return endpoint

    async def invoke(
        self, name: str, target: str, body: bytes, content_type: str | None
    ) -> tuple[Answer, Release, str]:
        """Forward a scoring request: the scoring server's answer, the release and its role."""
        endpoint = self.endpoint(name, target)
        release = model.choose(endpoint, self.draw())
        address = self.pool.address(release)
        if address is None:
            try:
                address = (await self.pool.ensure(release, retry=False)).address
            except (Refusal, LaunchError) as exc:
                raise Unavailable(f"version {release.version} of {name} is not available: {exc}") from exc
        headers = {FORWARDED: content_type} if content_type else {}
        try:
            answer = await self.pool.upstream.request(address, "POST", "/invocations", body, headers)
        except UpstreamError as exc:
            raise Unavailable(f"version {release.version} of {name} did not answer: {exc}", status=502) from exc
        return answer, release, model.role(endpoint, release)

    async def deploy(self, request: model.DeployRequest) -> tuple[Endpoint, bool]:
        """Deploy as ``request`` says; the endpoint, and whether it is new."""
        key = (request.release.model, request.target)
        async with self._lock(key):
            current = self.endpoints.get(key)
            updated = model.deploy(current, request.release, request.target, request.canary_percent)
            if updated is current:
                return updated, False  # a retry of what is already deployed
            with self._keeping([request.release]):  # its copy, from pruning while it is made
                source, digest = request.release.path, request.release.digest
                copy = await asyncio.to_thread(self.state.snapshot, source, digest)
                release = replace(request.release, path=copy)
                updated = model.deploy(current, release, request.target, request.canary_percent)
                await self._start_and_save(key, updated)
            self.log.info("Deployed %s version %s to %s (%d%% canary)", key[0], release.version, key[1],
                          request.canary_percent)  # fmt: skip
            return updated, current is None

    async def change(self, name: str, target: str, action: str) -> Endpoint:
        """Run ``action`` (``promote`` or ``rollback``) on the endpoint; the endpoint after it."""
        transitions = {"promote": model.promote, "rollback": model.rollback}
        async with self._lock((name, target)):
            updated = transitions[action](self.endpoint(name, target))
            await self._start_and_save((name, target), updated)
            self.log.info("%s of %s (%s): production is version %s", action, name, target, updated.production.version)
            return updated

    async def delete(self, name: str, target: str) -> None:
        """Remove the endpoint (its processes stop unless another endpoint uses them)."""
        async with self._lock((name, target)):
            self.endpoint(name, target)
            await self._save((name, target), None)
            self.log.info("Deleted the %s endpoint of %s", target, name)

    def _lock(self, key: EndpointKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    @contextlib.contextmanager
    def _keeping(self, releases: Iterable[Release]) -> Iterator[None]:
        """Keep ``releases``' processes and copies from being stopped or pruned in the block
        (by another endpoint's commit) although no route uses them yet."""
        kept = list(releases)
        self._pending.extend(kept)
        try:
            yield
        finally:
            for release in kept:
                self._pending.remove(release)

    async def _start_and_save(self, key: EndpointKey, endpoint: Endpoint) -> None:
        """Have every release of ``endpoint`` running, then commit it."""
        with self._keeping(endpoint.releases()):
            for release in endpoint.releases():
                await self.pool.ensure(release)
            await self._save(key, endpoint)

    async def _save(self, key: EndpointKey, endpoint: Endpoint | None) -> None:
        """Commit: save the routes with ``key`` set to ``endpoint`` (None: removed), swap them
        in, then stop the processes and drop the copies nothing refers to."""
        async with self._commit:
            endpoints = dict(self.endpoints)
            if endpoint is None:
                endpoints.pop(key, None)
            else:
                endpoints[key] = endpoint
            try:
                await asyncio.to_thread(self.state.save, endpoints)
            except Unavailable:
                await self.pool.retain([r for e in self.endpoints.values() for r in e.releases()] + self._pending)
                raise
            self.endpoints = endpoints
            serving = [r for e in endpoints.values() for r in e.releases()] + self._pending
            await self.pool.retain(serving)
            kept = serving + [r for e in endpoints.values() for r in e.history]
            await asyncio.to_thread(self.state.prune, kept)

    def status(self, endpoint: Endpoint, prefix: str) -> dict[str, Any]:
        """What the API shows of ``endpoint``: its releases, their processes, the split."""
        data: dict[str, Any] = {"name": endpoint.name, "target": endpoint.target}
        for role, release in (("production", endpoint.production), ("canary", endpoint.canary)):
            data[role] = None if release is None else {**_public(release), **self.pool.describe(release)}
        data["canary_percent"] = endpoint.canary_percent
        data["history"] = [_public(release) for release in endpoint.history]
        data["ready"] = all(self.pool.address(release) is not None for release in endpoint.releases())
        staging = "staging/" if endpoint.target == "staging" else ""
        data["invocations"] = f"{prefix}endpoints/{quote(endpoint.name)}/{staging}invocations"
        return data

    async def close(self) -> None:
        """Stop every scoring process and close the idle connections."""
        await self.pool.close()
        self.pool.upstream.close()


def _public(release: Release) -> dict[str, Any]:
    """A release as the API shows it: not where the service keeps its files."""
    return {"model": release.model, "version": release.version, "digest": release.digest}
