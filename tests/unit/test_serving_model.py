"""The serving routes' pure parts: transitions, the percent split, deploy bodies, digests, state.

No process, socket or server: the transitions are values in and values out; the digest
and the state folder only touch files under ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from hubforge.errors import ConfigError, Conflict, Invalid
from hubforge.hub.serving.digest import copy_tree, tree_digest
from hubforge.hub.serving.handlers import AccessCache
from hubforge.hub.serving.model import (
    MAX_HISTORY,
    Endpoint,
    Release,
    choose,
    deploy,
    endpoint_from_json,
    parse_deploy,
    promote,
    role,
    rollback,
    set_canary_percent,
)
from hubforge.hub.serving.scoring import clean_environment
from hubforge.hub.serving.state import ServingState


def release(version: str, model: str = "churn") -> Release:
    return Release(model, version, f"/models/{model}/{version}", "sha256:" + format(int(version), "064x"))


V1, V2, V3 = release("1"), release("2"), release("3")


def live() -> Endpoint:
    """churn in production at v1."""
    return deploy(None, V1, "production")


# --- deploy -----------------------------------------------------------------------------


def test_first_deploy_makes_production() -> None:
    endpoint = live()
    assert (endpoint.key, endpoint.production, endpoint.canary, endpoint.history) == (
        ("churn", "production"),
        V1,
        None,
        (),
    )


def test_deploy_at_zero_replaces_production_and_keeps_history() -> None:
    endpoint = deploy(live(), V2, "production")
    assert endpoint.production == V2
    assert endpoint.history == (V1,)
    assert endpoint.canary is None


def test_deploy_with_percent_makes_a_canary() -> None:
    endpoint = deploy(live(), V2, "production", 20)
    assert (endpoint.production, endpoint.canary, endpoint.canary_percent) == (V1, V2, 20)
    assert endpoint.history == ()
    assert endpoint.releases() == [V1, V2]


def test_redeploying_is_a_no_op_or_a_new_percent() -> None:
    endpoint = live()
    assert deploy(endpoint, V1, "production") is endpoint
    canary = deploy(endpoint, V2, "production", 20)
    assert deploy(canary, V2, "production", 50).canary_percent == 50
    # the same release under another path (the service's copy) is the same release
    moved = Release(V1.model, V1.version, "/elsewhere", V1.digest)
    assert deploy(endpoint, moved, "production") is endpoint


def test_a_canary_needs_a_production_release() -> None:
    with pytest.raises(Conflict, match="no production release yet"):
        deploy(None, V1, "production", 10)


def test_one_canary_at_a_time() -> None:
    canary = deploy(live(), V2, "production", 20)
    with pytest.raises(Conflict, match="canary version 2: promote or roll it back first"):
        deploy(canary, V3, "production", 10)
    with pytest.raises(Conflict, match="canary version 2"):
        deploy(canary, V3, "production")


def test_deploying_the_canary_at_zero_promotes_it() -> None:
    canary = deploy(live(), V2, "production", 20)
    assert deploy(canary, V2, "production") == promote(canary)


def test_production_cannot_be_its_own_canary() -> None:
    with pytest.raises(Conflict, match="already"):
        deploy(live(), V1, "production", 10)


def test_staging_is_its_own_namespace() -> None:
    staging = deploy(None, V2, "staging")
    assert staging.key == ("churn", "staging")
    with pytest.raises(Invalid, match="field 'model'"):
        deploy(staging, V3, "production")


@pytest.mark.parametrize("percent", [-1, 101, 2.5, True, "10"])
def test_percent_is_an_integer_from_0_to_100(percent: object) -> None:
    with pytest.raises(Invalid, match="field 'canary_percent'"):
        deploy(live(), V2, "production", percent)  # type: ignore[arg-type]


def test_unknown_target_is_refused() -> None:
    with pytest.raises(Invalid, match="field 'target'"):
        deploy(None, V1, "prod")


def test_history_is_bounded() -> None:
    endpoint = live()
    for n in range(2, MAX_HISTORY + 5):
        endpoint = deploy(endpoint, release(str(n)), "production")
    assert len(endpoint.history) == MAX_HISTORY
    assert endpoint.history[-1].version == str(MAX_HISTORY + 3)


# --- promote, rollback, percent ---------------------------------------------------------


def test_promote_makes_the_canary_production() -> None:
    endpoint = promote(deploy(live(), V2, "production", 20))
    assert (endpoint.production, endpoint.canary, endpoint.canary_percent, endpoint.history) == (V2, None, 0, (V1,))


def test_promote_without_canary_is_a_conflict() -> None:
    with pytest.raises(Conflict, match="no canary to promote"):
        promote(live())


def test_rollback_drops_the_canary_first() -> None:
    canary = deploy(deploy(live(), V2, "production"), V3, "production", 30)
    endpoint = rollback(canary)
    assert (endpoint.production, endpoint.canary, endpoint.canary_percent, endpoint.history) == (V2, None, 0, (V1,))


def test_rollback_restores_the_previous_production() -> None:
    endpoint = rollback(promote(deploy(live(), V2, "production", 20)))
    assert (endpoint.production, endpoint.history) == (V1, ())


def test_rollback_with_nothing_to_restore_is_a_conflict() -> None:
    with pytest.raises(Conflict, match="no canary and no previous release to roll back to"):
        rollback(live())
    with pytest.raises(Conflict):
        rollback(rollback(deploy(live(), V2, "production")))


def test_set_canary_percent() -> None:
    assert set_canary_percent(deploy(live(), V2, "production", 20), 75).canary_percent == 75
    with pytest.raises(Conflict, match="no canary"):
        set_canary_percent(live(), 10)
    with pytest.raises(Invalid, match="canary_percent"):
        set_canary_percent(deploy(live(), V2, "production", 20), 101)


# --- choose -----------------------------------------------------------------------------


def test_choose_splits_by_percent() -> None:
    endpoint = deploy(live(), V2, "production", 20)
    assert choose(endpoint, 0.0) == V2
    assert choose(endpoint, 0.1999) == V2
    assert choose(endpoint, 0.2) == V1
    assert choose(endpoint, 0.9999) == V1
    assert role(endpoint, V2) == "canary"
    assert role(endpoint, V1) == "production"


def test_choose_share_matches_the_percent() -> None:
    endpoint = deploy(live(), V2, "production", 37)
    draws = random.Random(7)
    share = sum(choose(endpoint, draws.random()) == V2 for _ in range(10_000)) / 10_000
    assert abs(share - 0.37) < 4 * (0.37 * 0.63 / 10_000) ** 0.5


@pytest.mark.parametrize(("percent", "canary"), [(0, 0), (100, 1)])
def test_choose_extremes(percent: int, canary: int) -> None:
    endpoint = set_canary_percent(deploy(live(), V2, "production", 50), percent)
    draws = [i / 1000 for i in range(1000)]
    assert all((choose(endpoint, d) == V2) == bool(canary) for d in draws)


def test_choose_without_canary_is_production() -> None:
    assert choose(live(), 0.0) == V1


# --- deploy bodies ----------------------------------------------------------------------


def body(**fields: object) -> dict[str, object]:
    return {"version": "1", "model_path": "/m/churn/1", "digest": V1.digest, **fields}


def test_parse_deploy_defaults() -> None:
    request = parse_deploy("churn", body(version=1))
    assert (request.release, request.target, request.canary_percent) == (
        Release("churn", "1", "/m/churn/1", V1.digest),
        "production",
        0,
    )


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"model": "other"}, "field 'model'"),
        ({"version": None}, "field 'version'"),
        ({"version": "1 2"}, "field 'version'"),
        ({"model_path": "relative/path"}, "field 'model_path'"),
        ({"model_path": 3}, "field 'model_path'"),
        ({"digest": "md5:abc"}, "field 'digest'"),
        ({"target": "prod"}, "field 'target'"),
        ({"target": 1}, "field 'target'"),
        ({"canary_percent": 150}, "field 'canary_percent'"),
        ({"extra": 1}, "field 'extra' is not known"),
    ],
)
def test_parse_deploy_names_the_bad_field(fields: dict[str, object], named: str) -> None:
    with pytest.raises(Invalid, match=named):
        parse_deploy("churn", body(**fields))


@pytest.mark.parametrize("missing", ["version", "model_path", "digest"])
def test_parse_deploy_requires(missing: str) -> None:
    data = body()
    del data[missing]
    with pytest.raises(Invalid, match=f"field '{missing}' is required"):
        parse_deploy("churn", data)


def test_parse_deploy_refuses_a_bad_name_and_a_non_object() -> None:
    with pytest.raises(Invalid, match="endpoint name"):
        parse_deploy("../etc", body(model="../etc"))
    with pytest.raises(Invalid, match="JSON object"):
        parse_deploy("churn", [])


def test_endpoint_json_round_trip() -> None:
    endpoint = deploy(deploy(live(), V2, "production"), V3, "production", 5)
    assert endpoint_from_json(json.loads(json.dumps(endpoint.to_json()))) == endpoint


def test_endpoint_json_refuses_another_models_release() -> None:
    data = live().to_json()
    data["history"] = [release("2", model="other").to_json()]
    with pytest.raises(Invalid, match="another model"):
        endpoint_from_json(data)


# --- digests ----------------------------------------------------------------------------


def model_folder(root: Path, content: bytes = b"weights") -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "sub" / "model.bin").write_bytes(content)
    return root


def test_tree_digest_is_stable_and_sees_every_change(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "m")
    first = tree_digest(folder)
    assert first.startswith("sha256:") and len(first) == 71
    assert tree_digest(folder) == first
    (folder / "sub" / "model.bin").write_bytes(b"weightz")
    changed = tree_digest(folder)
    assert changed != first
    (folder / "sub" / "model.bin").rename(folder / "sub" / "model2.bin")
    assert tree_digest(folder) not in (first, changed)


def test_tree_digest_frames_names_and_contents(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (one / "a").write_bytes(b"bc")
    (two / "ab").write_bytes(b"c")
    assert tree_digest(one) != tree_digest(two)


def test_tree_digest_refuses_links(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "m")
    os.symlink("/etc/passwd", folder / "sub" / "linked")
    with pytest.raises(Invalid, match="symbolic links are refused"):
        tree_digest(folder)
    os.symlink(folder, tmp_path / "alias")
    with pytest.raises(Invalid, match="not a folder"):
        tree_digest(tmp_path / "alias")


def test_tree_digest_refuses_special_files(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "m")
    os.mkfifo(folder / "pipe")
    with pytest.raises(Invalid, match="not a regular file"):
        tree_digest(folder)


def test_copy_tree_digest_is_the_copys(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "m")
    digest = copy_tree(folder, tmp_path / "copy")
    assert digest == tree_digest(folder) == tree_digest(tmp_path / "copy")


# --- state ------------------------------------------------------------------------------


def test_state_round_trip_and_atomic_file(tmp_path: Path) -> None:
    state = ServingState(tmp_path / "state")
    assert state.load() == {}
    endpoints = {e.key: e for e in (deploy(live(), V2, "production", 20), deploy(None, V3, "staging"))}
    state.save(endpoints)
    assert ServingState(tmp_path / "state").load() == endpoints
    assert sorted(p.name for p in state.folder.iterdir()) == ["endpoints.json", "home", "logs", "models", "run"]
    assert (state.folder.stat().st_mode & 0o777) == 0o700


def test_state_refuses_a_damaged_file(tmp_path: Path) -> None:
    state = ServingState(tmp_path)
    state.path.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable serving state"):
        state.load()
    state.path.write_text(json.dumps({"format": 99, "endpoints": []}))
    with pytest.raises(ConfigError, match="format 1"):
        state.load()


def test_snapshot_copies_checks_and_verifies(tmp_path: Path) -> None:
    source = model_folder(tmp_path / "m")
    digest = tree_digest(source)
    state = ServingState(tmp_path / "state")
    copy = state.snapshot(str(source), digest)
    assert Path(copy).parent == state.folder / "models"
    assert tree_digest(copy) == digest
    assert state.snapshot(str(source), digest) == copy  # already there
    state.verify(Release("churn", "1", copy, digest))
    (Path(copy) / "sub" / "model.bin").write_bytes(b"tampered")
    with pytest.raises(Conflict, match="is refused"):
        state.verify(Release("churn", "1", copy, digest))
    assert state.snapshot(str(source), digest) == copy  # a damaged copy is made again
    state.prune([])
    assert not Path(copy).exists()


def test_snapshot_refuses_a_changed_source(tmp_path: Path) -> None:
    source = model_folder(tmp_path / "m")
    digest = tree_digest(source)
    (source / "sub" / "model.bin").write_bytes(b"changed after approval")
    state = ServingState(tmp_path / "state")
    with pytest.raises(Conflict, match=r"field 'digest'.*not the approved"):
        state.snapshot(str(source), digest)
    assert list((state.folder / "models").iterdir()) == []
    with pytest.raises(Invalid, match="not an MLflow model folder"):
        state.snapshot(str(tmp_path), digest)


def test_clean_environment_holds_nothing_inherited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "secret")
    monkeypatch.setenv("HUBFORGE_CONFIG", "/etc/hubforge")
    env = clean_environment(tmp_path, "/venv/bin", tmp_path / "a.sock")
    assert set(env) == {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "MLFLOW_DISABLE_TELEMETRY",
        "UVICORN_ACCESS_LOG",
        "UVICORN_UDS",
    }
    assert env["PATH"].split(":")[0] == "/venv/bin"
    assert (env["HOME"], env["UVICORN_UDS"]) == (str(tmp_path), str(tmp_path / "a.sock"))


def test_access_cache_keeps_outcomes_for_a_while() -> None:
    cache = AccessCache(max_age=60, size=3)
    assert cache.get("t1") is None
    cache.put("t1", (200, {"name": "alice"}))
    cache.put("t2", (403, "no"))
    assert cache.get("t1") == (200, {"name": "alice"})
    assert cache.get("t2") == (403, "no")
    assert "t1" not in repr(cache._entries)  # keyed by digest, not by the token
    for n in range(3, 8):
        cache.put(f"t{n}", (401, "who?"))
    assert len(cache._entries) <= 3
    assert cache.get("t7") == (401, "who?")
    stale = AccessCache(max_age=-1)
    stale.put("t1", (200, {}))
    assert stale.get("t1") is None


def test_public_api_is_explicit_and_documented() -> None:
    import importlib

    names = ("app", "digest", "front", "handlers", "http1", "model", "router", "scoring", "state", "upstream")
    for module in [importlib.import_module(f"hubforge.hub.serving.{name}") for name in names]:
        assert module.__doc__ and module.__all__, module.__name__
        for name in module.__all__:
            value = getattr(module, name)
            if callable(value):
                assert value.__doc__, f"{module.__name__}.{name} has no docstring"
