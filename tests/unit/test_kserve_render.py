"""KServe InferenceServices: every object validates against KServe's CRD, and the rollouts add up.

Objects are validated against the InferenceService CRD schema vendored under
``tests/data/kserve`` (see its README), the way ``test_k8s_render.py`` validates Kueue's:
unknown fields refused, and what KServe's admission webhook checks instead of the
schema (the name, ``canaryTrafficPercent``'s range, the storage URI) checked by hand.
The API server's part of a rollout (applying a JSON merge patch) is played by
:func:`harness.kserve.merge`, RFC 7386 as written (the fake API server's own).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import hubforge.hub.serving.kserve as kserve
from harness.kserve import merge
from hubforge.errors import Conflict, Invalid
from hubforge.hub.serving.kserve import (
    MAX_NAME,
    KServeRelease,
    check_percent,
    deployed,
    inference_service,
    isvc_name,
    merge_patch,
    promoted,
    read_state,
    rolled_back,
)

KSERVE = Path(__file__).resolve().parents[1] / "data" / "kserve"
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
NS = "hubforge-serving"
V1 = KServeRelease("1", "s3://models/churn/1", "sha256:" + "1" * 64)
V2 = KServeRelease("2", "s3://models/churn/2", "sha256:" + "2" * 64)
V3 = KServeRelease("3", "gs://models/churn/3", "sha256:" + "3" * 64)


def release_args(release: KServeRelease) -> dict[str, Any]:
    return {"model_uri": release.uri, "version": release.version, "digest": release.digest}


def render(release: KServeRelease = V1, target: str = "production", **kwargs: Any) -> dict[str, Any]:
    return inference_service("churn", NS, **release_args(release), target=target, **kwargs)


# --- validation helpers ---------------------------------------------------------------------


def _closed(schema: Any) -> Any:
    """The schema with unknown fields refused where it declares properties (the API server prunes them)."""
    if isinstance(schema, dict):
        out = {key: _closed(value) for key, value in schema.items()}
        open_world = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in out and not open_world:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


@cache
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads((KSERVE / "inferenceservices.v1beta1.json").read_text())
    schema.pop("$comment")
    return jsonschema.Draft7Validator(_closed(schema))


def validate_isvc(obj: dict[str, Any]) -> None:
    assert obj["apiVersion"] == "serving.kserve.io/v1beta1" and obj["kind"] == "InferenceService"
    errors = sorted(validator().iter_errors(obj), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    meta = obj["metadata"]
    assert DNS1035.match(meta["name"]) and len(meta["name"]) <= MAX_NAME
    assert all(isinstance(v, str) and LABEL_VALUE.match(v) and len(v) <= 63 for v in meta["labels"].values())
    assert all(isinstance(v, str) for v in meta.get("annotations", {}).values())
    _check_webhook_rules(obj)


def _check_webhook_rules(obj: dict[str, Any]) -> None:
    """What KServe's admission webhook checks and the CRD schema does not, for what we write."""
    predictor = obj["spec"]["predictor"]
    if "canaryTrafficPercent" in predictor:
        assert 0 <= predictor["canaryTrafficPercent"] <= 100
    assert predictor["model"]["storageUri"].startswith(kserve.STORAGE_PREFIXES)


def stored(obj: dict[str, Any], version: int = 1) -> dict[str, Any]:
    """``obj`` as the API server would hold it (with a resourceVersion)."""
    return merge(obj, {"metadata": {"resourceVersion": str(version)}})


def step(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """``current`` after the merge patch toward ``desired``, validated."""
    patch = merge_patch(current, desired)
    assert patch["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
    after = merge(current, patch)
    after["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
    validate_isvc(after)
    return after


# --- the rendered objects -------------------------------------------------------------------


def test_production() -> None:
    obj = render(resources={"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}})
    validate_isvc(obj)
    assert obj["metadata"]["name"] == "churn" and obj["metadata"]["namespace"] == NS
    assert obj["spec"]["predictor"] == {
        "model": {
            "modelFormat": {"name": "mlflow"},
            "protocolVersion": "v2",
            "storageUri": "s3://models/churn/1",
            "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}},
        }
    }
    assert obj["metadata"]["labels"] == {
        "app.kubernetes.io/part-of": "hubforge",
        "app.kubernetes.io/managed-by": "hubforge",
        "hubforge.io/model": "churn",
        "hubforge.io/target": "production",
        "hubforge.io/version": "1",
    }
    assert obj["metadata"]["annotations"] == {"hubforge.io/model-name": "churn", "hubforge.io/digest": V1.digest}
    state = read_state(obj)
    assert (state.model, state.target, state.production, state.canary) == ("churn", "production", V1, None)
    assert state.aliases == {"production": "1"}


def test_ready_counts_only_for_the_spec_kserve_has_seen() -> None:
    obj = merge(render(), {"metadata": {"generation": 2}})
    ready = {"type": "Ready", "status": "True"}
    seen = {"observedGeneration": 2, "conditions": [ready], "url": "http://churn.models.example.com"}
    assert read_state({**obj, "status": seen}).ready
    before = {**seen, "observedGeneration": 1}  # still the last change's word
    assert not read_state({**obj, "status": before}).ready
    failing = {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "image pull failed"}
    state = read_state({**obj, "status": {"observedGeneration": 2, "conditions": [failing]}})
    assert (state.ready, state.message) == (False, "image pull failed")
    state = read_state({**obj, "status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "Pending"}]}})
    assert (state.ready, state.message) == (False, "Pending")
    assert read_state(obj).message is None


def test_canary_20() -> None:
    obj = render(V2, canary_percent=20, stable=V1, history=[V3], runtime="kserve-mlserver", service_account="models")
    validate_isvc(obj)
    predictor = obj["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 20
    assert predictor["serviceAccountName"] == "models"
    assert predictor["model"]["storageUri"] == V2.uri and predictor["model"]["runtime"] == "kserve-mlserver"
    assert obj["metadata"]["labels"]["hubforge.io/version"] == "2"
    assert json.loads(obj["metadata"]["annotations"]["hubforge.io/stable"]) == V1.to_json()
    state = read_state(obj)
    assert (state.production, state.canary, state.canary_percent, state.history) == (V1, V2, 20, (V3,))
    assert state.aliases == {"production": "1", "canary": "2"}


def test_staging() -> None:
    obj = inference_service(
        "Churn Model", "hubforge-staging", **release_args(V3), target="staging", labels={"team": "risk"}
    )
    validate_isvc(obj)
    assert obj["metadata"]["name"] == isvc_name("Churn Model")
    assert obj["metadata"]["labels"]["hubforge.io/target"] == "staging"
    assert obj["metadata"]["labels"]["team"] == "risk"
    assert obj["metadata"]["annotations"]["hubforge.io/model-name"] == "Churn Model"
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert read_state(obj).aliases == {"staging": "3"}


def test_the_validation_catches_mistakes() -> None:
    # The vendored schema, the closed world and the hand-checked rules are not vacuous.
    good = render()
    validate_isvc(good)
    mistakes = [
        {"spec": {"predictor": {"model": {"storageURI": "s3://x"}}}},
        {"spec": {"predictor": {"model": {"modelFormat": {"name": None, "version": "2"}}}}},
        {"spec": {"predictor": {"canaryTrafficPercent": "20"}}},
        {"spec": {"predictor": {"canaryTrafficPercent": 120}}},
        {"spec": {"predictor": {"model": {"storageUri": "models:/churn/1"}}}},
        {"spec": {"predictor": {"minReplicas": "two"}}},
        {"spec": {"predictor": {"model": {"resources": {"limits": {"cpu": "lots"}}}}}},
        {"metadata": {"name": "Churn"}},
    ]
    for mistake in mistakes:
        with pytest.raises(AssertionError):
            validate_isvc(merge(good, mistake))


# --- names ----------------------------------------------------------------------------------


def _hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("churn", "churn"),
        ("churn-v2", "churn-v2"),
        ("Churn", f"churn-{_hash('Churn')}"),
        ("fraud model_v2.1", f"fraud-model-v2-1-{_hash('fraud model_v2.1')}"),
        ("2024 sales", f"model-2024-sales-{_hash('2024 sales')}"),
        ("x" * 45, "x" * 45),
        ("x" * 46, f"{'x' * 36}-{_hash('x' * 46)}"),
        ("a" + "-" * 40 + "b", "a" + "-" * 40 + "b"),
        ("ab" + " " * 40 + "c", f"ab-c-{_hash('ab' + ' ' * 40 + 'c')}"),
        ("abc-" * 50, f"{('abc-' * 9).rstrip('-')}-{_hash('abc-' * 50)}"),
    ],
)
def test_names(model: str, expected: str) -> None:
    name = isvc_name(model)
    assert name == expected
    assert DNS1035.match(name) and len(name) <= MAX_NAME


def test_names_differ_where_models_do() -> None:
    names = {isvc_name(m) for m in ("churn", "Churn", "CHURN", "churn ", "churn.", "churn_")}
    assert len(names) == 6


@pytest.mark.parametrize("model", ["", " ", "-churn", ".churn", "churn/1", "mödel", "x" * 201, "a\nb"])
def test_bad_model_names_are_refused(model: str) -> None:
    with pytest.raises(Invalid, match="model name"):
        isvc_name(model)


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [-1, 101, 1000, 20.0, 0.5, "20", True, False, [20]])
def test_bad_percents_are_refused(percent: Any) -> None:
    with pytest.raises(Invalid, match="canary_percent must be a whole number from 0 to 100"):
        check_percent(percent)
    with pytest.raises(Invalid, match="canary_percent"):
        render(V2, canary_percent=percent, stable=V1)


@pytest.mark.parametrize(("percent", "field"), [(None, None), (0, None), (1, 1), (100, 100)])
def test_percents(percent: int | None, field: int | None) -> None:
    obj = render(V2, canary_percent=percent, stable=V1)
    validate_isvc(obj)
    assert obj["spec"]["predictor"].get("canaryTrafficPercent") == field


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_uri": "models:/churn/1"}, "is MLflow's: give the artifact location"),
        ({"model_uri": "runs:/abc/model"}, "is MLflow's"),
        ({"model_uri": "ftp://host/model"}, "KServe downloads only gs://, s3://"),
        ({"model_uri": "s3://bucket/a b"}, "is not a URI"),
        ({"version": "1.0-"}, "version '1.0-'"),
        ({"version": ""}, "version ''"),
        ({"digest": "sha256:abc"}, "digest must be 'sha256:' and 64 lowercase hex digits"),
        ({"target": "prod"}, "target must be one of production, staging, not 'prod'"),
        ({"namespace": "Hubforge"}, "namespace 'Hubforge' is not a valid Kubernetes name"),
        ({"runtime": "MLServer"}, "runtime 'MLServer'"),
        ({"service_account": "a_b"}, "service account 'a_b'"),
        ({"resources": {"request": {"cpu": 1}}}, "resources takes 'requests' and 'limits' only"),
        ({"resources": {"limits": {"cpu": "lots"}}}, "resources.limits.cpu: 'lots' is not a Kubernetes quantity"),
        ({"resources": {"limits": {"cpu": True}}}, "is not a Kubernetes quantity"),
        ({"labels": {"hubforge.io/version": "9"}}, "label key 'hubforge.io/version' is hubforge's own"),
        ({"labels": {"app.kubernetes.io/managed-by": "me"}}, "is hubforge's own"),
        ({"labels": {"team": "risk team"}}, "label 'team': 'risk team' is not a valid value"),
        ({"labels": {"bad key": "x"}}, "label key 'bad key' is not a valid Kubernetes key"),
        ({"annotations": {"hubforge.io/stable": "{}"}}, "annotation key 'hubforge.io/stable' is hubforge's own"),
        ({"canary_percent": 20}, "a canary needs the stable release"),
    ],
)
def test_refusals(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"namespace": NS, **release_args(V1), "target": "production", **kwargs}
    with pytest.raises(Invalid) as info:
        inference_service("churn", **args)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_objects_not_ours_are_refused() -> None:
    obj = render()
    obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "helm"
    with pytest.raises(Conflict, match=f"InferenceService {NS}/churn is not managed by hubforge"):
        read_state(obj)
    obj = render()
    del obj["metadata"]["annotations"]["hubforge.io/digest"]
    with pytest.raises(Conflict, match=re.escape("unreadable hubforge records (missing 'hubforge.io/digest')")):
        read_state(obj)
    obj = render()
    obj["metadata"]["annotations"]["hubforge.io/history"] = "[{}]"
    with pytest.raises(Conflict, match="unreadable hubforge records"):
        read_state(obj)


# --- rollouts -------------------------------------------------------------------------------


def deploy(current: dict[str, Any] | None, release: KServeRelease, percent: int | None = None) -> dict[str, Any]:
    return deployed(current, "churn", NS, **release_args(release), target="production", canary_percent=percent)


def test_canary_then_promote() -> None:
    v1 = stored(deploy(None, V1))
    v2 = step(v1, deploy(v1, V2, 20))
    assert v2["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert v2["spec"]["predictor"]["model"]["storageUri"] == V2.uri
    assert read_state(v2).aliases == {"production": "1", "canary": "2"}
    reweighted = step(v2, deploy(v2, V2, 50))
    assert merge_patch(v2, deploy(v2, V2, 50))["spec"] == {"predictor": {"canaryTrafficPercent": 50}}
    done = step(reweighted, promoted(reweighted))
    assert "canaryTrafficPercent" not in done["spec"]["predictor"]
    assert "hubforge.io/stable" not in done["metadata"]["annotations"]
    state = read_state(done)
    assert (state.production, state.canary, state.history, state.aliases) == (V2, None, (V1,), {"production": "2"})


def test_deploying_the_canary_without_a_percent_promotes_it() -> None:
    v1 = stored(deploy(None, V1))
    v2 = step(v1, deploy(v1, V2, 20))
    assert read_state(step(v2, deploy(v2, V2))) == read_state(step(v2, promoted(v2)))


def test_rollback_of_a_canary_pins_the_stable_release() -> None:
    v1 = stored(deploy(None, V1))
    v2 = step(v1, deploy(v1, V2, 20))
    back = step(v2, rolled_back(v2))
    # KServe's rollback: canaryTrafficPercent 0 sends all traffic to the last rolled-out revision,
    # and the spec says what that serves.
    assert back["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert back["spec"]["predictor"]["model"]["storageUri"] == V1.uri
    assert back["metadata"]["labels"]["hubforge.io/version"] == "1"
    state = read_state(back)
    assert (state.production, state.canary, state.aliases) == (V1, None, {"production": "1"})
    # The next full deploy takes the field away again.
    v3 = step(back, deploy(back, V3))
    assert "canaryTrafficPercent" not in v3["spec"]["predictor"]
    assert read_state(v3).history == (V1,)


def test_rollback_after_a_promotion_restores_the_previous_release() -> None:
    v1 = stored(deploy(None, V1))
    v2 = step(v1, deploy(v1, V2))
    v3 = step(v2, deploy(v2, V3))
    assert read_state(v3).history == (V1, V2)
    back = step(v3, rolled_back(v3))
    assert back["spec"]["predictor"]["model"]["storageUri"] == V2.uri
    assert "canaryTrafficPercent" not in back["spec"]["predictor"]
    assert read_state(back).history == (V1,)
    back = step(back, rolled_back(back))
    assert read_state(back).production == V1 and "hubforge.io/history" not in back["metadata"]["annotations"]
    with pytest.raises(Conflict, match="'churn' \\(production\\) has no canary and no previous release"):
        rolled_back(back)


def test_rollouts_refused() -> None:
    with pytest.raises(Conflict, match="churn has no production release yet: deploy one without a canary first"):
        deploy(None, V1, 20)
    v1 = stored(deploy(None, V1))
    with pytest.raises(Conflict, match="version 1 is already 'churn' \\(production\\)'s production release"):
        deploy(v1, V1, 20)
    with pytest.raises(Conflict, match="has no canary to promote"):
        promoted(v1)
    v2 = step(v1, deploy(v1, V2, 20))
    for percent in (None, 10):
        with pytest.raises(Conflict, match="has canary version 2: promote or roll it back first"):
            deploy(v2, V3, percent)
    with pytest.raises(
        Conflict, match=f"InferenceService {NS}/churn serves 'churn' on production, not 'churn' on staging"
    ):
        deployed(v2, "churn", NS, **release_args(V3), target="staging")


def test_redeploying_what_serves_changes_nothing() -> None:
    v1 = stored(deploy(None, V1))
    assert merge_patch(v1, deploy(v1, V1)) == {}


def test_merge_patch_leaves_what_others_wrote() -> None:
    v1 = stored(deploy(None, V1))
    v1["metadata"]["labels"]["team"] = "risk"
    v1["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Knative"
    v1["spec"]["predictor"]["model"]["resources"] = {"limits": {"cpu": "1"}}  # KServe's defaults
    patch = merge_patch(v1, deploy(v1, V2))
    assert json.loads(patch["metadata"]["annotations"].pop("hubforge.io/history")) == [V1.to_json()]
    assert patch == {
        "metadata": {
            "labels": {"hubforge.io/version": "2"},
            "annotations": {"hubforge.io/digest": V2.digest},
            "resourceVersion": "1",
        },
        "spec": {"predictor": {"model": {"storageUri": V2.uri}}},
    }


def test_history_is_bounded() -> None:
    obj = stored(deploy(None, V1))
    for n in range(2, 15):
        release = KServeRelease(str(n), f"s3://models/churn/{n}", "sha256:" + f"{n:x}" * 64)
        obj = step(obj, deploy(obj, release))
    history = read_state(obj).history
    assert len(history) == 10 and history[-1].version == "13" and history[0].version == "4"


def test_public_api() -> None:
    public = {
        name
        for name, value in vars(kserve).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == kserve.__name__
    }
    assert public <= set(kserve.__all__)
    assert all(hasattr(kserve, name) for name in kserve.__all__)
