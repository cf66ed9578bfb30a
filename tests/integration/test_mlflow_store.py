"""Permissions where MLflow acts: the guarded tracking store (hubforge.hub.mlflow.store).

A real SQLAlchemy tracking store on SQLite, guarded as the MLflow server guards it,
called as MLflow's handlers call it for alice, bob, an auditor and an admin; and a
real ``mlflow server --app-name hubforge`` attacked with request spellings the gate
reads one way and MLflow's handlers another.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import uuid
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.entities import ExperimentTag, Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.store.model_registry.abstract_store import AbstractStore as AbstractRegistry
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
from mlflow.store.tracking.abstract_store import AbstractStore
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from harness.mlflow_app import PREFIX, api, create_experiment, start_trace
from hubforge.hub.mlflow.policy import AUDIT, OWNER_TAG, REGISTRY, WRITE, Principal
from hubforge.hub.mlflow.rules import RULES
from hubforge.hub.mlflow.store import (
    REGISTRY_RULES,
    STORE_DECIDES,
    TRACKING_RULES,
    anyone,
    guard,
    guard_registry,
    public_methods,
    store_decides,
)

WHO: ContextVar[Principal | None] = ContextVar("who", default=None)
ALICE = Principal("alice", frozenset({WRITE}), frozenset({"vision"}), frozenset({"data-scientist"}))
BOB = Principal("bob", frozenset({WRITE}), frozenset({"nlp"}), frozenset({"data-scientist"}))
AUDITOR = Principal("audrey", frozenset({AUDIT}), roles=frozenset({"data-steward"}))
ADMIN = Principal("erin", frozenset({WRITE}), roles=frozenset({"platform-admin"}))
MANAGER = Principal("mel", frozenset({WRITE, REGISTRY}), roles=frozenset({"ml-engineer"}))


def principal() -> Principal | None:
    return WHO.get()


class As:
    """Calls on the store as ``who`` (None: the server's own work)."""

    def __init__(self, who: Principal | None):
        self.who = who

    def __enter__(self) -> None:
        self.token = WHO.set(self.who)

    def __exit__(self, *exc: object) -> None:
        WHO.reset(self.token)


def refused(call: Any, *words: str) -> str:
    with pytest.raises(MlflowException) as caught:
        call()
    assert caught.value.error_code == "PERMISSION_DENIED", caught.value
    for word in words:
        assert word in caught.value.message, caught.value.message
    return caught.value.message


@pytest.fixture
def store(tmp_path: Path) -> SqlAlchemyStore:
    raw = SqlAlchemyStore(f"sqlite:///{tmp_path / 'mlflow.sqlite'}", str(tmp_path / "artifacts"))
    return guard(raw, principal)


@pytest.fixture
def alices(store: SqlAlchemyStore) -> tuple[str, str]:
    """alice's experiment and a run of hers in it, made as alice."""
    with As(ALICE):
        exp = store.create_experiment("/Users/alice/churn", tags=[ExperimentTag(OWNER_TAG, "alice")])
        run = store.create_run(exp, "alice", 0, [], "fit").info.run_id
        store.log_batch(run, [Metric("loss", 0.5, 1, 0)], [Param("C", "1")], [])
    return exp, run


@pytest.mark.parametrize(
    ("abstract", "store_class", "rules"),
    [
        (AbstractStore, SqlAlchemyStore, TRACKING_RULES),
        (AbstractRegistry, RegistryStore, REGISTRY_RULES),
    ],
    ids=["tracking", "registry"],
)
def test_every_public_method_of_mlflows_stores_is_classified(abstract: type, store_class: type, rules: dict) -> None:
    """An MLflow upgrade adding a store method fails here until the table says who may call it."""
    for cls in (abstract, store_class):
        unclassified = sorted(set(public_methods(cls)) - set(rules))
        assert not unclassified, f"{cls.__name__}: classify {unclassified} in hubforge.hub.mlflow.store"
    stale = sorted(set(rules) - set(public_methods(store_class)))
    assert not stale, f"rules for methods MLflow no longer has: {stale}"


def _handler_source(path: str, method: str) -> str:
    """The source of the view MLflow's server routes ``method path`` to, with the
    ``*_impl`` functions of MLflow's handlers module it calls."""
    from mlflow.server import handlers

    views = [view for route, view, methods in handlers.get_endpoints() if route == path and method in methods]
    assert len(views) == 1, f"MLflow routes {method} {path} to {views}"
    source = inspect.getsource(inspect.unwrap(views[0]))
    for name in sorted(set(re.findall(r"\b(\w+_impl)\(", source))):
        source += inspect.getsource(inspect.unwrap(getattr(handlers, name)))
    return source


@pytest.mark.parametrize(("method", "route"), sorted(STORE_DECIDES))
def test_routes_the_store_decides_alone_reach_only_that_store_method(method: str, route: str) -> None:
    """The gate lets these through undecided: their handlers must touch MLflow's data only
    through the one guarded method named, which has a real rule, and the gate knows the route."""
    name = STORE_DECIDES[(method, route)]
    assert (method, route) in RULES, f"{method} {route} is not a route the gate knows"
    assert TRACKING_RULES[name] is not anyone, f"{name} is open to anyone: the gate must decide {route}"
    for prefix in ("/api/2.0/", "/ajax-api/2.0/"):
        source = _handler_source(prefix + route, method)
        calls = re.findall(r"_get_tracking_store\(\)\s*\.\s*(\w+)\(", source)
        assert calls == [name], f"{method} {prefix}{route} calls the tracking store's {calls}, not only {name}"
        for other in ("_get_model_registry_store", "_get_artifact_repo", "get_artifact_repository", "_get_job_store"):
            assert other not in source, f"{method} {prefix}{route} also reaches {other}"
    assert store_decides(method, "api/2.0/" + route) and store_decides(method, "ajax-api/2.0/" + route)
    assert not store_decides(method, route), "only under an API version"
    if method == "GET":
        assert store_decides("HEAD", "api/2.0/" + route)


def test_the_gate_still_decides_every_other_route() -> None:
    assert not store_decides("POST", "api/2.0/mlflow/runs/get")
    assert not store_decides("GET", "api/2.0/mlflow/runs/search")
    assert not store_decides("POST", "api/2.0/mlflow/runs/create")
    assert not store_decides("GET", "api/2.0/mlflow-artifacts/artifacts/1/run/artifacts/x")


@pytest.fixture
def registry(tmp_path: Path, store: SqlAlchemyStore) -> Any:
    return guard_registry(RegistryStore(f"sqlite:///{tmp_path / 'mlflow.sqlite'}"), principal, store)


def test_a_registered_model_is_its_owners_and_versions_need_a_readable_source(
    store: SqlAlchemyStore, registry: Any, alices: tuple[str, str]
) -> None:
    from mlflow.entities.model_registry import RegisteredModelTag

    exp, run = alices
    source = f"mlflow-artifacts:/{exp}/{run}/artifacts/model"
    with As(ALICE):
        registry.create_registered_model("churn", tags=[RegisteredModelTag(OWNER_TAG, "alice")])
        version = registry.create_model_version("churn", source, run_id=run)
        assert registry.get_model_version("churn", version.version).run_id == run
    with As(BOB):
        refused(lambda: registry.get_registered_model("churn"), "bob may not read registered model")
        refused(lambda: registry.get_model_version_download_uri("churn", "1"), "bob may not read")
        refused(lambda: registry.set_registered_model_tag("churn", RegisteredModelTag("x", "y")), "only alice")
        refused(lambda: registry.create_model_version("churn", source), "only alice")
        registry.create_registered_model("bobs", tags=[RegisteredModelTag(OWNER_TAG, "bob")])
        # alice's run, named by id or only inside the source: not bob's to register.
        refused(lambda: registry.create_model_version("bobs", source, run_id=run), "bob may not read run")
        refused(lambda: registry.create_model_version("bobs", source), "bob may not read run")
        refused(lambda: registry.create_model_version("bobs", f"runs:/{run}/model"), "bob may not read run")
        refused(lambda: registry.delete_registered_model("churn"), "may not manage the model registry")
    with As(MANAGER):
        # A registry manager reads every model, but registers only what they may read.
        assert registry.get_registered_model("churn").name == "churn"
        registry.create_registered_model("mels", tags=[RegisteredModelTag(OWNER_TAG, "mel")])
        refused(lambda: registry.create_model_version("mels", source, run_id=run), "mel may not read run")
        registry.set_registered_model_alias("churn", "champion", "1")
        # production, staging and canary are the deployments' (the governance service's), not people's.
        for reserved in ("production", "Staging", "canary"):
            refused(lambda a=reserved: registry.set_registered_model_alias("churn", a, "1"), "deployments")
            refused(lambda a=reserved: registry.delete_registered_model_alias("churn", a), "deployments")
    with As(ALICE):
        refused(lambda: registry.create_prompt("p"), "reserved to platform admins")
        assert str(registry.get_model_version_by_alias("churn", "champion").version) == "1"


def test_a_method_the_table_does_not_know_is_refused_to_people(tmp_path: Path) -> None:
    class Newer(SqlAlchemyStore):
        def export_everything(self) -> str:
            return "everyone's runs"

    store = guard(Newer(f"sqlite:///{tmp_path / 'm.sqlite'}", str(tmp_path / "a")), principal)
    with As(ADMIN):
        refused(store.export_everything, "export_everything", "not open")
    assert store.export_everything() == "everyone's runs", "the server's own work is not checked"


def test_another_person_cannot_touch_a_run_whatever_the_call(store: SqlAlchemyStore, alices: tuple[str, str]) -> None:
    exp, run = alices
    with As(BOB):
        refused(lambda: store.get_run(run), "bob may not read run")
        refused(lambda: store.get_metric_history(run, "loss"), "bob may not read")
        refused(lambda: store.get_metric_history_bulk([run], "loss", 10), "bob may not read")
        refused(lambda: store.log_batch(run, [Metric("loss", 9.9, 2, 1)], [], []), "alice's")
        refused(lambda: store.log_metric(run, Metric("loss", 9.9, 2, 1)), "alice's")
        refused(lambda: store.log_param(run, Param("C", "2")), "alice's")
        refused(lambda: store.set_tag(run, RunTag("mlflow.runName", "mine")), "alice's")
        refused(lambda: store.delete_tag(run, "mlflow.runName"), "alice's")
        refused(lambda: store.update_run_info(run, RunStatus.FAILED, 1, "renamed"), "alice's")
        refused(lambda: store.delete_run(run), "alice's")
        refused(lambda: store.restore_run(run), "alice's")
        refused(lambda: store.search_runs([exp], "", ViewType.ALL), "bob may not read experiment")
        refused(lambda: store.get_experiment(exp), "bob may not read experiment")
        refused(lambda: store.get_experiment_by_name("/Users/alice/churn"), "bob may not read experiment")
        refused(lambda: store.create_run(exp, "bob", 0, [], "planted"), "bob may not add")
        refused(lambda: store.rename_experiment(exp, "/Users/bob/stolen"), "only the owner")
        refused(lambda: store.set_experiment_tag(exp, ExperimentTag("note", "x")), "only the owner")
        refused(lambda: store.delete_experiment(exp), "only the owner")
        refused(lambda: store.link_traces_to_run([], run), "alice's")
    # Nothing changed.
    with As(ALICE):
        kept = store.get_run(run)
        assert (kept.info.status, kept.info.run_name, kept.data.params) == ("RUNNING", "fit", {"C": "1"})
        assert [m.value for m in store.get_metric_history(run, "loss")] == [0.5]
        assert store.get_experiment(exp).name == "/Users/alice/churn"


def test_ids_come_as_mlflows_handlers_pass_them(store: SqlAlchemyStore, alices: tuple[str, str]) -> None:
    """MLflow's handlers hand on protobuf repeated fields, not lists: each id is still checked."""
    from mlflow.protos.service_pb2 import SearchRuns

    exp, run = alices
    message = SearchRuns(experiment_ids=[exp])
    with As(BOB):
        refused(lambda: store.search_runs(message.experiment_ids, "", ViewType.ALL), "bob may not read experiment")
        refused(lambda: store.get_metric_history_bulk(iter([run]), "loss", 10), "bob may not read run")
    with As(ALICE):
        assert len(store.search_runs(message.experiment_ids, "", ViewType.ALL)) == 1
        assert [m.value for m in store.get_metric_history_bulk(iter([run]), "loss", 10)] == [0.5]


def test_the_owner_works_as_before(store: SqlAlchemyStore, alices: tuple[str, str]) -> None:
    exp, run = alices
    with As(ALICE):
        store.log_batch(run, [Metric("loss", 0.4, 2, 1)], [Param("gamma", "0.1")], [RunTag("team", "vision")])
        store.update_run_info(run, RunStatus.FINISHED, 5, "fit-1")
        assert [r.info.run_id for r in store.search_runs([exp], "", ViewType.ALL)] == [run]
        assert store.get_experiment_by_name("/Users/alice/churn").experiment_id == exp
        assert store.get_experiment_by_name("/Users/alice/absent") is None
        store.rename_experiment(exp, "/Users/alice/churn-v2")
        store.delete_run(run)
        store.restore_run(run)
        assert store.get_run(run).info.status == "FINISHED"


def test_a_run_is_created_only_as_its_creator(store: SqlAlchemyStore, alices: tuple[str, str]) -> None:
    exp, _ = alices
    with As(ALICE):
        refused(lambda: store.create_run(exp, "bob", 0, [], "forged"), "created as alice's")


def test_auditors_read_everything_and_write_nothing(store: SqlAlchemyStore, alices: tuple[str, str]) -> None:
    exp, run = alices
    with As(AUDITOR):
        assert store.get_run(run).data.params == {"C": "1"}
        assert len(store.search_runs([exp], "", ViewType.ALL)) == 1
        refused(lambda: store.log_metric(run, Metric("loss", 1.0, 3, 2)), "may not log")
        refused(lambda: store.create_experiment("/Users/audrey/x"), "may not create")


def test_admins_manage_but_write_no_ones_runs(store: SqlAlchemyStore, alices: tuple[str, str]) -> None:
    exp, run = alices
    with As(ADMIN):
        assert store.get_run(run).info.run_id == run
        store.delete_run(run)
        store.restore_run(run)
        refused(lambda: store.log_metric(run, Metric("loss", 1.0, 3, 2)), "alice's")
        store.set_experiment_tag(exp, ExperimentTag("reviewed", "yes"))
        store.create_experiment("/Users/erin/placed", artifact_location="file:///srv/elsewhere")


def test_the_platform_chooses_where_artifacts_live(store: SqlAlchemyStore) -> None:
    with As(ALICE):
        refused(
            lambda: store.create_experiment("/Users/alice/out", artifact_location="file:///etc"),
            "artifact_location is chosen by the platform",
        )
        refused(lambda: store.create_experiment("/Users/bob/inside"), "bob's folder")
        refused(
            lambda: store.create_experiment("/Users/alice/owned", tags=[ExperimentTag(OWNER_TAG, "bob")]),
            "set by hubforge",
        )


def test_the_owner_tag_cannot_be_moved(store: SqlAlchemyStore, alices: tuple[str, str]) -> None:
    exp, _ = alices
    with As(ALICE):
        refused(lambda: store.set_experiment_tag(exp, ExperimentTag(OWNER_TAG, "bob")), "set by hubforge")
        refused(lambda: store.delete_experiment_tag(exp, OWNER_TAG), "set by hubforge")


def invalid(call: Any, *words: str) -> None:
    with pytest.raises(MlflowException) as caught:
        call()
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE", caught.value
    assert caught.value.get_http_status_code() == 400
    for word in words:
        assert word in caught.value.message, caught.value.message


def test_the_runs_creator_tag_is_the_platforms(store: SqlAlchemyStore, alices: tuple[str, str]) -> None:
    """``mlflow.user`` names whoever made the run; nobody relabels it afterwards, whatever the call."""
    exp, run = alices
    with As(ALICE):
        invalid(lambda: store.set_tag(run, RunTag("mlflow.user", "bob")), "mlflow.user")
        invalid(lambda: store.set_tag(run, RunTag("mlflow.user", "alice")), "set by hubforge")
        invalid(lambda: store.delete_tag(run, "mlflow.user"), "mlflow.user")
        invalid(lambda: store.log_batch(run, [], [], [RunTag("note", "x"), RunTag("mlflow.user", "bob")]))
        invalid(lambda: store.log_batch(run, [], [], iter([RunTag("mlflow.user", "bob")])))
        invalid(lambda: store.create_run(exp, "alice", 0, [RunTag("mlflow.user", "bob")], "forged"), "'bob'")
        mine = store.create_run(exp, "alice", 0, [RunTag("mlflow.user", "alice")], "mine")
        store.set_tag(run, RunTag("note", "kept"))
        assert store.get_run(run).data.tags["note"] == "kept"
    with As(None):  # the platform's own work
        store.set_tag(mine.info.run_id, RunTag("mlflow.user", "alice"))
    with As(ALICE):
        assert store.get_run(run).data.tags.get("mlflow.user") != "bob"


def test_server_and_tier_tags_are_what_the_hub_runs(store: SqlAlchemyStore, alices: tuple[str, str]) -> None:
    """``hubforge.server``/``hubforge.tier`` say where a run ran: only as the hub runs the person's servers."""
    exp, run = alices
    on_gpu = dataclasses.replace(ALICE, servers=frozenset({("", "interactive"), ("gpu", "training")}))

    def tags(**given: str) -> list[RunTag]:
        return [RunTag(f"hubforge.{key}", value) for key, value in given.items()]

    with As(on_gpu):
        for fine in ({"server": "default", "tier": "interactive"}, {"server": "gpu", "tier": "training"}):
            store.create_run(exp, "alice", 0, tags(**fine), "placed")
        store.create_run(exp, "alice", 0, tags(tier="training"), "some server of hers")
        store.set_tag(run, RunTag("hubforge.tier", "interactive"))
        store.log_batch(run, [], [], tags(server="gpu", tier="training"))
        for forged in (
            {"server": "default", "tier": "training"},
            {"server": "big", "tier": "finetune"},
            {"tier": "finetune"},
        ):
            invalid(lambda f=forged: store.create_run(exp, "alice", 0, tags(**f), "forged"), "running: default")
        invalid(lambda: store.set_tag(run, RunTag("hubforge.tier", "finetune")), "hubforge.tier 'finetune'")
        invalid(lambda: store.log_batch(run, [], [], tags(server="gpu", tier="interactive")), "hubforge.tier")
        invalid(lambda: store.delete_tag(run, "hubforge.server"), "not removed")
        store.set_tag(run, RunTag("hubforge.notebook", "renamed.ipynb"))  # the notebook's own words
    with As(ALICE):  # no server running: nothing to bear the tags out
        invalid(lambda: store.create_run(exp, "alice", 0, tags(server="default"), "x"), "running: none")
    with As(on_gpu):
        assert store.get_run(run).data.tags["hubforge.tier"] == "training"


def test_mlflows_genai_platform_is_for_admins(store: SqlAlchemyStore) -> None:
    with As(ALICE):
        refused(lambda: store.list_gateway_endpoints(), "reserved to platform admins")
        refused(lambda: store.list_secret_infos(), "reserved to platform admins")
    with As(ADMIN):
        assert store.list_gateway_endpoints() == []


# --- through the MLflow server: spellings the gate reads one way and MLflow another -------


@pytest.fixture
def two_runs(browser: httpx.Client) -> tuple[str, str]:
    """A run of alice's and one of carol's (another person), each in their own experiment."""
    runs = []
    for token in ("alice-token", "carol-token"):
        experiment = create_experiment(browser, api(token))
        created = browser.post(
            f"{PREFIX}api/2.0/mlflow/runs/create", json={"experiment_id": experiment}, headers=api(token)
        )
        assert created.status_code == 200, created.text
        runs.append(created.json()["run"]["info"]["run_id"])
    return runs[0], runs[1]


MLFLOW = f"{PREFIX}api/2.0/mlflow"


def alices_run(browser: httpx.Client, run_id: str) -> dict[str, Any]:
    """Her run as alice reads it."""
    resp = browser.get(f"{MLFLOW}/runs/get", params={"run_id": run_id}, headers=api("alice-token"))
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["run"])


AJAX = f"{PREFIX}ajax-api/2.0/mlflow"
METRIC = {"key": "x", "value": 1, "timestamp": 1, "step": 0}


@pytest.mark.parametrize("root", [MLFLOW, AJAX])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "runs/log-batch",
            lambda run: {"runId": run, "metrics": [{"key": "x", "value": 1, "timestamp": 1, "step": 0}]},
        ),
        ("runs/log-metric", lambda run: {"run_uuid": run, "key": "x", "value": 1, "timestamp": 1}),
        ("runs/log-parameter", lambda run: {"runId": run, "key": "planted", "value": "1"}),
        ("runs/set-tag", lambda run: {"runId": run, "key": "mlflow.runName", "value": "planted"}),
        ("runs/update", lambda run: {"run_uuid": run, "status": "FAILED"}),
        ("runs/update", lambda run: {"runId": run, "runName": "planted"}),
        ("runs/delete", lambda run: {"runId": run}),
    ],
    ids=["log-batch", "log-metric", "log-parameter", "set-tag", "update-status", "update-name", "delete"],
)
def test_writes_into_anothers_run_are_refused_in_every_spelling(
    browser: httpx.Client,
    two_runs: tuple[str, str],
    root: str,
    path: str,
    body: Any,
) -> None:
    """carol names her own run in the query and alice's in the body, where MLflow reads it."""
    alices, carols = two_runs
    resp = browser.post(f"{root}/{path}", params={"run_id": carols}, json=body(alices), headers=api("carol-token"))
    # The gate refuses two different values for one parameter (400); MLflow would have read
    # the body's, and its store would refuse that (403).
    assert resp.status_code in (400, 403), resp.text
    run = alices_run(browser, alices)
    assert run["info"]["status"] == "RUNNING" and run["info"]["lifecycle_stage"] == "active"
    assert run["data"].get("metrics", []) == [] and run["data"].get("params", []) == []
    assert run["info"]["run_name"] != "planted"


RELABEL = {"key": "mlflow.user", "value": "bob"}


@pytest.mark.parametrize("root", [MLFLOW, AJAX])
@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("runs/set-tag", lambda run: {"run_id": run, "key": "mlflow.user", "value": "bob"}, "mlflow.user"),
        # MLflow's handlers themselves refuse a run named only as runId here.
        ("runs/set-tag", lambda run: {"runId": run, "key": "mlflow.user", "value": "bob"}, "run_id"),
        ("runs/delete-tag", lambda run: {"run_id": run, "key": "mlflow.user"}, "mlflow.user"),
        ("runs/log-batch", lambda run: {"run_id": run, "tags": [RELABEL]}, "mlflow.user"),
        ("runs/log-batch", lambda run: {"runId": run, "tags": [RELABEL]}, "run_id"),
    ],
    ids=["set-tag", "set-tag-camel", "delete-tag", "log-batch", "log-batch-camel"],
)
def test_nobody_relabels_their_own_runs_creator(
    browser: httpx.Client,
    two_runs: tuple[str, str],
    root: str,
    path: str,
    body: Any,
    named: str,
) -> None:
    alices, _ = two_runs
    resp = browser.post(f"{root}/{path}", json=body(alices), headers=api("alice-token"))
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE" and named in resp.json()["message"]
    run = alices_run(browser, alices)
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["mlflow.user"] == "alice"


def test_a_search_for_anothers_runs_is_refused_in_camel_case(
    browser: httpx.Client,
    two_runs: tuple[str, str],
) -> None:
    alices, carols = two_runs
    alice_exp = browser.get(f"{MLFLOW}/runs/get", params={"run_id": alices}, headers=api("alice-token")).json()
    carol_exp = browser.get(f"{MLFLOW}/runs/get", params={"run_id": carols}, headers=api("carol-token")).json()
    resp = browser.post(
        f"{MLFLOW}/runs/search",
        params={"experiment_ids": carol_exp["run"]["info"]["experiment_id"]},
        json={"experimentIds": [alice_exp["run"]["info"]["experiment_id"]]},
        headers=api("carol-token"),
    )
    assert resp.status_code in (400, 403), resp.text
    assert alices not in resp.text


def test_the_store_refuses_what_the_gate_lets_through(
    browser: httpx.Client,
    two_runs: tuple[str, str],
) -> None:
    """Linking a trace to a run: the gate checks the run; the store checks the traces too."""
    alices, carols = two_runs
    run = alices_run(browser, alices)
    trace = start_trace(browser, "alice-token", run["info"]["experiment_id"])
    linked = browser.post(
        f"{MLFLOW}/traces/link-to-run", json={"trace_ids": [trace], "run_id": carols}, headers=api("carol-token")
    )
    assert linked.status_code == 403, linked.text
    assert "carol may not add to experiment" in linked.json()["message"]
    own = browser.post(
        f"{MLFLOW}/traces/link-to-run", json={"trace_ids": [trace], "run_id": alices}, headers=api("alice-token")
    )
    assert own.status_code == 200, own.text


def test_the_owners_own_requests_still_pass(browser: httpx.Client, two_runs: tuple[str, str]) -> None:
    alices, _ = two_runs
    resp = browser.post(
        f"{MLFLOW}/runs/log-batch",
        json={"run_id": alices, "params": [{"key": "C", "value": "1"}]},
        headers=api("alice-token"),
    )
    assert resp.status_code == 200, resp.text
    run = alices_run(browser, alices)
    assert run["data"]["params"] == [{"key": "C", "value": "1"}]


def test_artifacts_are_written_only_into_objects_that_exist(
    browser: httpx.Client,
    two_runs: tuple[str, str],
) -> None:
    """The artifact proxy: uploads go into alice's existing run and trace; not under a trace or a
    logged model that does not exist, nor into another experiment's path for them."""
    alices, _ = two_runs
    run = alices_run(browser, alices)
    experiment = run["info"]["experiment_id"]
    trace = start_trace(browser, "alice-token", experiment)
    files = f"{PREFIX}api/2.0/mlflow-artifacts/artifacts"

    def put(path: str) -> httpx.Response:
        return browser.put(f"{files}/{path}", content=b"{}", headers=api("alice-token"))

    assert put(f"{experiment}/{alices}/artifacts/notes.json").status_code == 200
    assert put(f"{experiment}/traces/{trace}/artifacts/traces.json").status_code == 200
    for path in (
        f"{experiment}/traces/tr-{uuid.uuid4().hex}/artifacts/traces.json",
        f"{experiment}/models/m-{uuid.uuid4().hex}/artifacts/MLmodel",
        f"{int(experiment) + 1000}/traces/{trace}/artifacts/traces.json",
    ):
        resp = put(path)
        assert resp.status_code == 403, (path, resp.text)
        assert "existing objects only" in resp.json()["message"] or "may not" in resp.json()["message"]
    listing = browser.get(files, params={"path": f"{experiment}/traces"}, headers=api("alice-token")).json()
    assert [f["path"] for f in listing.get("files", [])] == [trace], "nothing was created beside the real trace"
