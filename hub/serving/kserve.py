"""KServe ``InferenceService`` objects for registered models, as plain dicts, and their rollouts.

The Kubernetes deploy target serves each registered model on each target
(``production`` or ``staging``, each its own namespace, as in :mod:`.model`) as
one ``serving.kserve.io/v1beta1`` ``InferenceService`` whose predictor loads the
MLflow model at a storage URI, the way KServe documents MLflow models
(https://kserve.github.io/website/docs/model-serving/predictive-inference/frameworks/mlflow)::

    spec:
      predictor:
        model:
          modelFormat: {name: mlflow}
          protocolVersion: v2
          storageUri: s3://...

KServe picks its ``kserve-mlserver`` runtime for that format by itself; a
``runtime`` given here names a ServingRuntime instead.

Canary rollouts follow KServe's model
(https://kserve.github.io/website/docs/model-serving/predictive-inference/rollout-strategies/canary-example):
the new spec is applied with ``spec.predictor.canaryTrafficPercent: N`` and KServe
sends N% of the traffic to the new revision and the rest to the last revision rolled
out with 100%; promotion removes the field (all traffic to the new revision);
``canaryTrafficPercent: 0`` pins all traffic back on the previously rolled-out
revision at once. KServe runs canaries only in its Knative (formerly "Serverless")
deployment mode.

The object records what it serves, so that :func:`read_state` (and with it the MLflow
aliases, :attr:`KServeState.aliases`) always says what is deployed where:

- labels: :data:`MANAGED_LABELS`, ``hubforge.io/model`` (the object's name),
  ``hubforge.io/target`` and ``hubforge.io/version`` (of the release in the spec);
- annotations: ``hubforge.io/model-name`` (the registered model's own name),
  ``hubforge.io/digest`` (of the release in the spec), ``hubforge.io/stable`` (while a
  canary runs: the release taking the rest of the traffic) and ``hubforge.io/history``
  (previous releases, newest last, for :func:`rolled_back`), both as JSON.

The transitions (:func:`deployed`, :func:`promoted`, :func:`rolled_back`) follow the
one-machine router's (:mod:`.model`): one canary at a time, a canary only beside a
release already serving; each returns the whole object as it should be, and
:func:`merge_patch` the JSON merge patch (RFC 7386) that gets it there. Everything here
is pure; :mod:`.kserve_client` talks to the cluster.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hubforge.errors import Conflict, Invalid

from .digest import DIGEST_PATTERN
from .model import MAX_HISTORY, TARGETS, check_name

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "DIGEST_ANNOTATION",
    "HISTORY_ANNOTATION",
    "KIND",
    "MANAGED_LABELS",
    "MAX_NAME",
    "MODEL_LABEL",
    "MODEL_NAME_ANNOTATION",
    "PLURAL",
    "STABLE_ANNOTATION",
    "STORAGE_PREFIXES",
    "TARGET_LABEL",
    "VERSION_LABEL",
    "KServeRelease",
    "KServeState",
    "check_percent",
    "deployed",
    "inference_service",
    "isvc_name",
    "merge_patch",
    "promoted",
    "read_state",
    "rolled_back",
]

API_GROUP = "serving.kserve.io"
API_VERSION = "v1beta1"
KIND = "InferenceService"
PLURAL = "inferenceservices"
#: The longest name given to an InferenceService: KServe appends ``-predictor`` and
#: Knative's tag routes prepend ``latest-``/``prev-``, all within a 63-character DNS label.
MAX_NAME = 45
#: The storage URIs KServe's storage initializer downloads (``SupportedStorageURIPrefixList``
#: in kserve/kserve ``pkg/controller/v1beta1/inferenceservice/utils/utils.go``, v0.20.0).
STORAGE_PREFIXES = (
    "gs://",
    "s3://",
    "pvc://",
    "file://",
    "https://",
    "http://",
    "hdfs://",
    "webhdfs://",
    "oci://",
    "oci+native://",
    "hf://",
)
#: Labels on every object hubforge manages (as on the objects ``hubforge k8s render`` writes).
MANAGED_LABELS = {"app.kubernetes.io/part-of": "hubforge", "app.kubernetes.io/managed-by": "hubforge"}

_PREFIX = "hubforge.io/"
MODEL_LABEL = _PREFIX + "model"
TARGET_LABEL = _PREFIX + "target"
VERSION_LABEL = _PREFIX + "version"
MODEL_NAME_ANNOTATION = _PREFIX + "model-name"
DIGEST_ANNOTATION = _PREFIX + "digest"
STABLE_ANNOTATION = _PREFIX + "stable"
HISTORY_ANNOTATION = _PREFIX + "history"

_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(\d+(\.\d*)?|\.\d+)))?")
_HASH_LENGTH = 8


@dataclass(frozen=True)
class KServeRelease:
    """One model version as the cluster serves it: its version, storage URI and digest."""

    version: str
    uri: str
    digest: str

    def to_json(self) -> dict[str, str]:
        """The release as recorded in an annotation."""
        return {"version": self.version, "uri": self.uri, "digest": self.digest}

    @classmethod
    def from_json(cls, data: Any) -> KServeRelease:
        """A release from :meth:`to_json`'s form (Invalid if malformed)."""
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("version", "uri", "digest")):
            raise Invalid("a recorded release needs string fields version, uri and digest")
        return _checked(cls(data["version"], data["uri"], data["digest"]))


@dataclass(frozen=True)
class KServeState:
    """What an InferenceService serves, as :func:`read_state` reads it.

    ``production`` takes the traffic the canary does not; ``canary_percent`` is 0
    without a canary. ``ready``, ``url``, ``traffic`` (revision name, percent) and
    ``message`` (why it is not ready, as its ``Ready`` condition says) are KServe's own
    status, empty until its controller has reported.
    """

    name: str
    namespace: str
    model: str
    target: str
    production: KServeRelease
    canary: KServeRelease | None = None
    canary_percent: int = 0
    history: tuple[KServeRelease, ...] = ()
    ready: bool = False
    url: str | None = None
    traffic: tuple[tuple[str, int], ...] = ()
    message: str | None = None

    @property
    def aliases(self) -> dict[str, str]:
        """The MLflow aliases that say what this object serves: alias -> model version.

        ``{target: production version}``, and ``"canary"`` while a canary on
        production takes traffic (the alias names one version per model, so only
        production's canary has it).
        """
        aliases = {self.target: self.production.version}
        if self.canary is not None and self.canary_percent > 0 and self.target == "production":
            aliases["canary"] = self.canary.version
        return aliases


# --- names and checks ------------------------------------------------------------------------


def isvc_name(model: str) -> str:
    """The InferenceService name for registered model ``model``: a DNS-1035 label.

    A name that already is one (and at most :data:`MAX_NAME` long) is kept; any other
    is lowercased, each run of other characters becomes ``-``, a leading digit gets
    ``model-`` before it, and ``-`` and 8 hex digits of the SHA-256 of ``model`` go
    after it (truncated to fit), so that ``Churn`` and ``churn`` differ.
    """
    check_name(model, "model name")
    if _DNS1035.fullmatch(model) and len(model) <= MAX_NAME:
        return model
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    if not slug[:1].isalpha():
        slug = f"model-{slug}"
    digest = hashlib.sha256(model.encode()).hexdigest()[:_HASH_LENGTH]
    return f"{slug[: MAX_NAME - _HASH_LENGTH - 1].rstrip('-')}-{digest}"


def check_percent(value: object) -> int:
    """``value`` as a canary's share of the traffic: None or 0 for no canary, else 1-100."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise Invalid(f"canary_percent must be a whole number from 0 to 100, not {value!r}")
    return value


def _checked(release: KServeRelease) -> KServeRelease:
    if not isinstance(release.version, str) or not (
        _LABEL_VALUE.fullmatch(release.version) and 0 < len(release.version) <= 63
    ):
        raise Invalid(f"version {release.version!r}: 1-63 letters, digits, '.', '_' or '-', starting and ending alnum")
    if not isinstance(release.digest, str) or not DIGEST_PATTERN.fullmatch(release.digest):
        raise Invalid("digest must be 'sha256:' and 64 lowercase hex digits")
    _check_uri(release.uri)
    return release


def _check_uri(uri: object) -> None:
    if not isinstance(uri, str) or not uri or any(c.isspace() or not c.isprintable() for c in uri):
        raise Invalid(f"model_uri {uri!r} is not a URI")
    if uri.startswith(("models:/", "runs:/", "mlflow-artifacts:")):
        raise Invalid(f"model_uri {uri!r} is MLflow's: give the artifact location KServe downloads (s3://, gs://, ...)")
    if not uri.startswith(STORAGE_PREFIXES):
        raise Invalid(f"model_uri {uri!r}: KServe downloads only {', '.join(STORAGE_PREFIXES)}")


def _check_target(target: object) -> str:
    if target not in TARGETS:
        raise Invalid(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    return str(target)


def _check_dns(value: object, what: str, pattern: re.Pattern[str], limit: int) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value) or len(value) > limit:
        raise Invalid(f"{what} {value!r} is not a valid Kubernetes name")
    return value


def _check_resources(resources: Mapping[str, Any]) -> dict[str, dict[str, str | int]]:
    if not isinstance(resources, Mapping) or not set(resources) <= {"requests", "limits"}:
        raise Invalid("resources takes 'requests' and 'limits' only")
    out: dict[str, dict[str, str | int]] = {}
    for kind, amounts in resources.items():
        if not isinstance(amounts, Mapping):
            raise Invalid(f"resources.{kind} must map resource names to quantities")
        for resource, amount in amounts.items():
            if isinstance(amount, bool) or not isinstance(amount, str | int) or not _QUANTITY.fullmatch(str(amount)):
                raise Invalid(f"resources.{kind}.{resource}: {amount!r} is not a Kubernetes quantity")
        out[kind] = dict(amounts)
    return out


def _check_metadata(items: Mapping[str, str], what: str, *, values: re.Pattern[str] | None) -> dict[str, str]:
    for key, value in items.items():
        if not _valid_key(key):
            raise Invalid(f"{what} key {key!r} is not a valid Kubernetes key")
        if key.startswith(_PREFIX) or key in MANAGED_LABELS:
            raise Invalid(f"{what} key {key!r} is hubforge's own")
        if not isinstance(value, str) or (values is not None and not (values.fullmatch(value) and len(value) <= 63)):
            raise Invalid(f"{what} {key!r}: {value!r} is not a valid value")
    return dict(items)


def _valid_key(key: object) -> bool:
    """Whether ``key`` is a Kubernetes label or annotation key: ``[prefix/]name``."""
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if not (_LABEL_VALUE.fullmatch(name) and 0 < len(name) <= 63):
        return False
    return not prefix or (bool(_DNS1123_SUBDOMAIN.fullmatch(prefix)) and len(prefix) <= 253)


# --- the object ------------------------------------------------------------------------------


def inference_service(
    name: str,
    namespace: str,
    model_uri: str,
    *,
    version: str,
    digest: str,
    target: str,
    canary_percent: int | None = None,
    runtime: str | None = None,
    service_account: str | None = None,
    resources: Mapping[str, Mapping[str, str | int]] | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    stable: KServeRelease | None = None,
    history: Sequence[KServeRelease] = (),
) -> dict[str, Any]:
    """The InferenceService serving version ``version`` of registered model ``name`` on ``target``.

    ``model_uri`` is where KServe downloads the MLflow model folder (one of
    :data:`STORAGE_PREFIXES`); ``digest`` is its :func:`~.digest.tree_digest`.
    ``canary_percent`` (1-100) makes it a canary beside ``stable``, the release that
    keeps the rest of the traffic; ``history`` lists earlier releases, newest last.
    ``runtime`` names a ServingRuntime (default: KServe's choice for MLflow models).
    Raises :class:`~hubforge.errors.Invalid` naming the first bad argument.
    """
    release = _checked(KServeRelease(version, model_uri, digest))
    percent = check_percent(canary_percent)
    if percent and stable is None:
        raise Invalid("a canary needs the stable release it shares the traffic with")
    model: dict[str, Any] = {"modelFormat": {"name": "mlflow"}, "protocolVersion": "v2", "storageUri": model_uri}
    if runtime is not None:
        model["runtime"] = _check_dns(runtime, "runtime", _DNS1123_SUBDOMAIN, 253)
    if resources is not None:
        model["resources"] = _check_resources(resources)
    predictor: dict[str, Any] = {"model": model}
    if service_account is not None:
        predictor["serviceAccountName"] = _check_dns(service_account, "service account", _DNS1123_SUBDOMAIN, 253)
    meta: dict[str, Any] = {
        "name": isvc_name(name),
        "namespace": _check_dns(namespace, "namespace", _DNS1123_LABEL, 63),
        "labels": {**_check_metadata(labels or {}, "label", values=_LABEL_VALUE), **MANAGED_LABELS},
        "annotations": {**_check_metadata(annotations or {}, "annotation", values=None), MODEL_NAME_ANNOTATION: name},
    }
    meta["labels"].update({MODEL_LABEL: meta["name"], TARGET_LABEL: _check_target(target)})
    obj = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": meta, "spec": {"predictor": predictor}}
    return _with_release(obj, release, percent or None, stable if percent else None, tuple(history))


def _with_release(
    obj: dict[str, Any],
    release: KServeRelease,
    percent: int | None,
    stable: KServeRelease | None,
    history: tuple[KServeRelease, ...],
) -> dict[str, Any]:
    """A copy of ``obj`` serving ``release`` (canary at ``percent`` beside ``stable``, if given)."""
    new = copy.deepcopy(obj)
    meta, predictor = new["metadata"], new["spec"]["predictor"]
    meta["labels"][VERSION_LABEL] = release.version
    annotations = meta.setdefault("annotations", {})
    annotations[DIGEST_ANNOTATION] = release.digest
    predictor["model"]["storageUri"] = release.uri
    _put(predictor, "canaryTrafficPercent", percent)
    _put(annotations, STABLE_ANNOTATION, None if stable is None else _dumps(stable.to_json()))
    kept = history[-MAX_HISTORY:]
    _put(annotations, HISTORY_ANNOTATION, _dumps([r.to_json() for r in kept]) if kept else None)
    return new


def _put(mapping: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def _dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


# --- reading what is deployed ----------------------------------------------------------------


def read_state(obj: Mapping[str, Any]) -> KServeState:
    """What ``obj`` (an InferenceService as the API server holds it) serves.

    Raises :class:`~hubforge.errors.Conflict` for an object hubforge does not manage
    or whose records are unreadable (someone else's, or edited by hand).
    """
    meta = obj.get("metadata") or {}
    where = f"InferenceService {meta.get('namespace')}/{meta.get('name')}"
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    if any(labels.get(key) != value for key, value in MANAGED_LABELS.items()):
        raise Conflict(f"{where} is not managed by hubforge")
    try:
        predictor = obj["spec"]["predictor"]
        spec_release = _checked(
            KServeRelease(labels[VERSION_LABEL], predictor["model"]["storageUri"], annotations[DIGEST_ANNOTATION])
        )
        stable = annotations.get(STABLE_ANNOTATION)
        history = tuple(KServeRelease.from_json(item) for item in json.loads(annotations.get(HISTORY_ANNOTATION, "[]")))
        state = KServeState(
            name=meta["name"],
            namespace=meta["namespace"],
            model=annotations[MODEL_NAME_ANNOTATION],
            target=_check_target(labels[TARGET_LABEL]),
            production=spec_release if stable is None else KServeRelease.from_json(json.loads(stable)),
            canary=None if stable is None else spec_release,
            canary_percent=0 if stable is None else check_percent(predictor.get("canaryTrafficPercent", 100)),
            history=history,
            **_status(obj.get("status") or {}, meta.get("generation")),
        )
    except (KeyError, TypeError, ValueError, Invalid) as exc:
        raise Conflict(f"{where} has unreadable hubforge records ({_what(exc)})") from exc
    return state


def _what(exc: Exception) -> str:
    return f"missing {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]


def _status(status: Mapping[str, Any], generation: Any) -> dict[str, Any]:
    """KServe's word on the object; ``Ready`` counts only once its controller has seen the
    spec as it is now (``observedGeneration``), not the one before the last change."""
    conditions = status.get("conditions") or []
    observed = status.get("observedGeneration")
    stale = isinstance(observed, int) and isinstance(generation, int) and observed < generation
    condition: Mapping[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
    traffic = ((status.get("components") or {}).get("predictor") or {}).get("traffic") or []
    pairs = tuple((str(t.get("revisionName", "")), int(t.get("percent") or 0)) for t in traffic)
    message = condition.get("message") or condition.get("reason")
    return {
        "ready": condition.get("status") == "True" and not stale,
        "url": status.get("url"),
        "traffic": pairs,
        "message": str(message) if message else None,
    }


# --- the transitions -------------------------------------------------------------------------


def deployed(
    current: Mapping[str, Any] | None,
    name: str,
    namespace: str,
    model_uri: str,
    *,
    version: str,
    digest: str,
    target: str,
    canary_percent: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The object after deploying a release over ``current`` (None: there is none yet).

    Without ``canary_percent`` (or 0) the release takes all the traffic, the one it
    replaces going to the history; deploying the running canary so promotes it. With
    one, it is the canary beside the release serving now (again with another percent:
    a re-weighting). Refused with :class:`~hubforge.errors.Conflict`, as by
    :func:`.model.deploy`: a canary with nothing serving yet, a canary of the version
    already serving, or another release while a canary runs. ``options`` are
    :func:`inference_service`'s ``runtime``, ``service_account``, ``resources``,
    ``labels`` and ``annotations``.
    """
    release = _checked(KServeRelease(version, model_uri, digest))
    percent = check_percent(canary_percent)
    render: dict[str, Any] = {"name": name, "namespace": namespace, "model_uri": model_uri, "target": target}
    render.update(version=version, digest=digest, **options)
    if current is None:
        if percent:
            raise Conflict(f"{name} has no {target} release yet: deploy one without a canary first")
        return inference_service(**render)
    state = _matching(current, name, target)
    if percent == 0:
        if state.canary is not None and release != state.canary:
            raise Conflict(
                f"{_describe(state)} has canary version {state.canary.version}: promote or roll it back first"
            )
        history = state.history if release == state.production else (*state.history, state.production)
        return inference_service(**render, history=history)
    if release == state.production:
        raise Conflict(f"version {version} is already {_describe(state)}'s production release")
    if state.canary is not None and release != state.canary:
        raise Conflict(f"{_describe(state)} has canary version {state.canary.version}: promote or roll it back first")
    return inference_service(**render, canary_percent=percent, stable=state.production, history=state.history)


def promoted(current: Mapping[str, Any]) -> dict[str, Any]:
    """The object with its canary serving all the traffic (``canaryTrafficPercent`` removed)."""
    state = read_state(current)
    if state.canary is None:
        raise Conflict(f"{_describe(state)} has no canary to promote")
    return _with_release(dict(current), state.canary, None, None, (*state.history, state.production))


def rolled_back(current: Mapping[str, Any]) -> dict[str, Any]:
    """The object after a rollback: the canary dropped, else the previous release restored.

    Dropping a canary sets ``canaryTrafficPercent: 0`` with the stable release back in
    the spec: KServe moves all the traffic to the last revision rolled out at once, and
    the spec says what serves. Without a canary, the previous release's storage URI is
    applied again (a new revision; the current one serves until it is ready).
    """
    state = read_state(current)
    if state.canary is not None:
        return _with_release(dict(current), state.production, 0, None, state.history)
    if not state.history:
        raise Conflict(f"{_describe(state)} has no canary and no previous release to roll back to")
    return _with_release(dict(current), state.history[-1], None, None, state.history[:-1])


def _matching(current: Mapping[str, Any], name: str, target: str) -> KServeState:
    state = read_state(current)
    if (state.model, state.target) != (name, target):
        where = f"InferenceService {state.namespace}/{state.name}"
        raise Conflict(f"{where} serves {state.model!r} on {state.target}, not {name!r} on {target}")
    return state


def _describe(state: KServeState) -> str:
    return f"{state.model!r} ({state.target})"


# --- the patch -------------------------------------------------------------------------------


def merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``current`` into ``desired`` where hubforge writes.

    That is: the labels and annotations ``desired`` has, hubforge's own that it has not
    (removed), and ``spec.predictor`` as far as ``desired`` sets it, with
    ``canaryTrafficPercent`` removed when ``desired`` has none. What others set
    (KServe's defaults, other labels) is left alone. ``metadata.resourceVersion`` is
    ``current``'s, so the API server refuses the patch (409) if the object changed
    since it was read. Empty when there is nothing to change.
    """
    meta, new_meta = current.get("metadata") or {}, desired["metadata"]
    changes: dict[str, Any] = {}
    for field in ("labels", "annotations"):
        diff = _owned_diff(meta.get(field) or {}, new_meta.get(field) or {})
        if diff:
            changes.setdefault("metadata", {})[field] = diff
    predictor = _diff(current["spec"]["predictor"], desired["spec"]["predictor"])
    if (
        "canaryTrafficPercent" in current["spec"]["predictor"]
        and "canaryTrafficPercent" not in desired["spec"]["predictor"]
    ):
        predictor["canaryTrafficPercent"] = None
    if predictor:
        changes["spec"] = {"predictor": predictor}
    if changes and meta.get("resourceVersion"):
        changes.setdefault("metadata", {})["resourceVersion"] = meta["resourceVersion"]
    return changes


def _owned_diff(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str | None]:
    diff: dict[str, str | None] = {key: value for key, value in new.items() if old.get(key) != value}
    diff.update({key: None for key in old if key.startswith(_PREFIX) and key not in new})
    return diff


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    diff: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = _diff(before, value)
            if sub:
                diff[key] = sub
        elif before != value:
            diff[key] = copy.deepcopy(value)
    return diff
