"""The serving routes as plain values, and their transitions as pure functions.

An :class:`Endpoint` is one registered model's route on one target (``production`` or
``staging``, each its own namespace: ``(name, target)`` is the key). It always has a
production :class:`Release`, may have a canary that takes ``canary_percent`` of the
traffic, and keeps the previous production releases in ``history`` (newest last) for
:func:`rollback`. Every transition returns a new endpoint or raises a
:class:`~hubforge.errors.Refusal`; nothing here starts a process or writes a file.

One change is in flight at a time: while a canary runs, only it may be promoted,
rolled back, re-weighted, or deployed again (an idempotent retry); another release is
refused with a :class:`~hubforge.errors.Conflict` until the canary is settled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from hubforge.errors import Conflict, Invalid

from .digest import DIGEST_PATTERN

__all__ = [
    "DEPLOY_FIELDS",
    "MAX_HISTORY",
    "TARGETS",
    "DeployRequest",
    "Endpoint",
    "Release",
    "check_name",
    "choose",
    "deploy",
    "endpoint_from_json",
    "parse_deploy",
    "promote",
    "release_from_json",
    "role",
    "rollback",
    "set_canary_percent",
]

#: The deploy targets: each is its own namespace of endpoints.
TARGETS: tuple[str, ...] = ("production", "staging")
#: Previous production releases kept for rollback, per endpoint.
MAX_HISTORY = 10

# A registered model name as a URL path segment; a version as MLflow numbers them (or a tag).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,199}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Release:
    """One model version as served: where its files are and what they hash to.

    ``path`` is the folder the scoring server loads (the service's own copy once
    deployed); ``digest`` is :func:`~.digest.tree_digest` of it, as governance approved.
    """

    model: str
    version: str
    path: str
    digest: str

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies the release's scoring process: model, version and digest."""
        return (self.model, self.version, self.digest)

    def to_json(self) -> dict[str, Any]:
        """The release as stored and as the API shows it."""
        return {"model": self.model, "version": self.version, "path": self.path, "digest": self.digest}


@dataclass(frozen=True)
class Endpoint:
    """One route: ``name`` (the registered model) on ``target``."""

    name: str
    target: str
    production: Release
    canary: Release | None = None
    canary_percent: int = 0
    history: tuple[Release, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        """``(name, target)``: the endpoint's identity."""
        return (self.name, self.target)

    def releases(self) -> list[Release]:
        """The releases that serve traffic now (production first)."""
        return [self.production] if self.canary is None else [self.production, self.canary]

    def to_json(self) -> dict[str, Any]:
        """The endpoint as stored (the API adds each release's process state)."""
        return {
            "name": self.name,
            "target": self.target,
            "production": self.production.to_json(),
            "canary": None if self.canary is None else self.canary.to_json(),
            "canary_percent": self.canary_percent,
            "history": [release.to_json() for release in self.history],
        }


def check_name(name: str, what: str = "field 'model'") -> str:
    """``name`` if it can name an endpoint (a registered model), else Invalid naming ``what``."""
    if not _NAME.fullmatch(name):
        raise Invalid(
            f"{what}: an endpoint name is 1-200 letters, digits, '.', '_', '-' or spaces, "
            "starting with a letter or digit"
        )
    return name


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise Invalid(f"field 'target' must be one of {', '.join(TARGETS)}")
    return target


def _check_percent(percent: object) -> int:
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise Invalid("field 'canary_percent' must be an integer from 0 to 100")
    return percent


def _check_release(release: Release) -> Release:
    check_name(release.model)
    if not _VERSION.fullmatch(release.version):
        raise Invalid("field 'version' must be 1-64 letters, digits, '.', '_' or '-'")
    if not DIGEST_PATTERN.fullmatch(release.digest):
        raise Invalid("field 'digest' must be 'sha256:' and 64 lowercase hex digits")
    if not release.path.startswith("/"):
        raise Invalid("field 'model_path' must be an absolute path")
    return release


def deploy(endpoint: Endpoint | None, release: Release, target: str, canary_percent: int = 0) -> Endpoint:
    """The endpoint after deploying ``release`` to ``target``.

    ``endpoint`` is the current one for ``(release.model, target)``, None when there is
    none. ``canary_percent`` 0 makes ``release`` production (the old production goes to
    history); above 0 makes it the canary at that percent, beside the production release.
    Deploying what already serves in that role is a no-op (a retry), or a new percent.
    """
    _check_release(release)
    _check_target(target)
    percent = _check_percent(canary_percent)
    if endpoint is None:
        if percent:
            raise Conflict(f"{release.model} has no {target} release yet: deploy one with canary_percent 0 first")
        return Endpoint(name=release.model, target=target, production=release)
    if endpoint.key != (release.model, target):
        raise Invalid(f"field 'model': {release.model!r} is not endpoint {endpoint.name!r} ({endpoint.target})")
    if percent == 0:
        return _deploy_production(endpoint, release)
    return _deploy_canary(endpoint, release, percent)


def _deploy_production(endpoint: Endpoint, release: Release) -> Endpoint:
    if release.key == endpoint.production.key and endpoint.canary is None:
        return endpoint
    if endpoint.canary is not None:
        if release.key == endpoint.canary.key:
            return promote(endpoint)
        raise _busy(endpoint, endpoint.canary)
    return replace(endpoint, production=release, history=_pushed(endpoint.history, endpoint.production))


def _deploy_canary(endpoint: Endpoint, release: Release, percent: int) -> Endpoint:
    if release.key == endpoint.production.key:
        raise Conflict(f"version {release.version} is already {_describe(endpoint)}'s production release")
    if endpoint.canary is not None and release.key != endpoint.canary.key:
        raise _busy(endpoint, endpoint.canary)
    return replace(endpoint, canary=release, canary_percent=percent)


def promote(endpoint: Endpoint) -> Endpoint:
    """The canary becomes production (all traffic); the old production goes to history."""
    if endpoint.canary is None:
        raise Conflict(f"{_describe(endpoint)} has no canary to promote")
    return replace(
        endpoint,
        production=endpoint.canary,
        canary=None,
        canary_percent=0,
        history=_pushed(endpoint.history, endpoint.production),
    )


def rollback(endpoint: Endpoint) -> Endpoint:
    """Drop the canary if there is one, else restore the previous production release."""
    if endpoint.canary is not None:
        return replace(endpoint, canary=None, canary_percent=0)
    if not endpoint.history:
        raise Conflict(f"{_describe(endpoint)} has no canary and no previous release to roll back to")
    return replace(endpoint, production=endpoint.history[-1], history=endpoint.history[:-1])


def set_canary_percent(endpoint: Endpoint, percent: int) -> Endpoint:
    """The endpoint with its canary taking ``percent`` of the traffic."""
    percent = _check_percent(percent)
    if endpoint.canary is None:
        raise Conflict(f"{_describe(endpoint)} has no canary")
    return replace(endpoint, canary_percent=percent)


def choose(endpoint: Endpoint, draw: float) -> Release:
    """The release that serves a request whose uniform draw in [0, 1) is ``draw``.

    The canary takes draws below ``canary_percent / 100``: exactly that share of a
    uniform stream, none at 0 and all at 100.
    """
    if endpoint.canary is not None and draw * 100 < endpoint.canary_percent:
        return endpoint.canary
    return endpoint.production


def role(endpoint: Endpoint, release: Release) -> str:
    """``"canary"`` or ``"production"``: what ``release`` is on ``endpoint``."""
    return "canary" if endpoint.canary is not None and release.key == endpoint.canary.key else "production"


def _pushed(history: tuple[Release, ...], release: Release) -> tuple[Release, ...]:
    return (*history, release)[-MAX_HISTORY:]


def _busy(endpoint: Endpoint, canary: Release) -> Conflict:
    return Conflict(f"{_describe(endpoint)} has canary version {canary.version}: promote or roll it back first")


def _describe(endpoint: Endpoint) -> str:
    return f"endpoint {endpoint.name!r} ({endpoint.target})"


def release_from_json(data: Any) -> Release:
    """A :class:`Release` from its :meth:`Release.to_json` form (Invalid if malformed)."""
    fields = ("model", "version", "path", "digest")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in fields):
        raise Invalid("a release needs string fields model, version, path and digest")
    return _check_release(Release(data["model"], data["version"], data["path"], data["digest"]))


def endpoint_from_json(data: Any) -> Endpoint:
    """An :class:`Endpoint` from its :meth:`Endpoint.to_json` form (Invalid if malformed)."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise Invalid("an endpoint needs a string field name")
    canary = None if data.get("canary") is None else release_from_json(data["canary"])
    history = data.get("history", [])
    if not isinstance(history, list):
        raise Invalid("an endpoint's history must be a list")
    endpoint = Endpoint(
        name=check_name(data["name"], "field 'name'"),
        target=_check_target(data.get("target", "")),
        production=release_from_json(data.get("production")),
        canary=canary,
        canary_percent=_check_percent(data.get("canary_percent", 0)),
        history=tuple(release_from_json(item) for item in history),
    )
    if any(r.model != endpoint.name for r in [*endpoint.releases(), *endpoint.history]):
        raise Invalid(f"endpoint {endpoint.name!r} holds a release of another model")
    return endpoint


#: The fields of a deploy body; ``version``, ``model_path`` and ``digest`` are required.
DEPLOY_FIELDS: tuple[str, ...] = ("target", "model", "version", "model_path", "digest", "canary_percent")


@dataclass(frozen=True)
class DeployRequest:
    """A checked deploy body: the release (``path``: the folder named), where, at what percent."""

    release: Release
    target: str
    canary_percent: int


def parse_deploy(name: str, data: Any) -> DeployRequest:
    """The deploy body ``data`` for endpoint ``name``, checked: Invalid naming the first bad field."""
    check_name(name, "endpoint name")
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object")
    for key in data:
        if key not in DEPLOY_FIELDS:
            raise Invalid(f"field {key!r} is not known (known: {', '.join(DEPLOY_FIELDS)})")
    for key in ("version", "model_path", "digest"):
        if key not in data:
            raise Invalid(f"field {key!r} is required")
    model = data.get("model", name)
    if model != name:
        raise Invalid(f"field 'model' must be the endpoint's name {name!r}")
    version = data["version"]
    if isinstance(version, int) and not isinstance(version, bool) and version >= 0:
        version = str(version)
    for key, value in (("version", version), ("model_path", data["model_path"]), ("digest", data["digest"])):
        if not isinstance(value, str):
            raise Invalid(f"field {key!r} must be a string")
    target = data.get("target", "production")
    if not isinstance(target, str):
        raise Invalid("field 'target' must be a string")
    release = _check_release(Release(name, version, data["model_path"], data["digest"]))
    return DeployRequest(release, _check_target(target), _check_percent(data.get("canary_percent", 0)))
