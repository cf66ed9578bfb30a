"""MLflow permission decisions, request by request, over an in-memory catalogue.

The objects a decision looks at come from a dict-backed :class:`Resolver`; the
same decisions against a real hub and a real MLflow are in test_mlflow_isolation.py.
"""

from __future__ import annotations

import itertools

import pytest

from hubforge.hub.mlflow.policy import LoggedModelRef, Owned, Principal, RunRef, owned
from hubforge.hub.mlflow.rules import RULES, authorize
from hubforge.hub.mlflow.search import filtered_page

WRITE, AUDIT, REGISTRY = "custom:experiments:write", "custom:audit:read", "custom:registry:manage"
ALICE = Principal("alice", frozenset({WRITE}), frozenset({"data-scientist", "fraud"}), frozenset({"data-scientist"}))
BOB = Principal("bob", frozenset({WRITE, REGISTRY}), frozenset({"ml-engineer"}), frozenset({"ml-engineer"}))
CAROL = Principal("carol", frozenset({WRITE, REGISTRY, AUDIT}), frozenset({"ml-lead"}), frozenset({"ml-lead"}))
ERIN = Principal("erin", frozenset({WRITE, REGISTRY, AUDIT}), frozenset(), frozenset({"platform-admin"}))
ANALYST = Principal("ann", frozenset({"custom:models:read"}), frozenset({"fraud"}), frozenset({"analyst"}))


class Catalogue:
    """A :class:`Resolver` over dicts."""

    def __init__(self) -> None:
        self.experiments = {
            "0": owned("0", "Default", {}),
            "1": owned("1", "/Users/alice/churn", {"hubforge.owner": "alice"}),
            "2": owned("2", "/Users/bob/ranker", {"hubforge.owner": "bob", "hubforge.shared_with": "fraud, x"}),
            "3": owned("3", "/Users/alice/old", {}),  # before owner tags: the folder says
            "4": owned("4", "/Users/carol/private", {}),
        }
        self.names = {"/Users/alice/churn": "1", "/Users/carol/private": "4"}
        self.runs = {
            "ra": RunRef("ra", "alice", "1"),
            "rb": RunRef("rb", "bob", "2"),
            "rx": RunRef("rx", "alice", "2"),
            "rc": RunRef("rc", "carol", "4"),
        }
        self.models = {
            "churn": Owned("churn", "alice"),
            "ranker": Owned("ranker", "bob", frozenset({"fraud"})),
        }
        self.logged = {
            "m-a": LoggedModelRef("m-a", "1", "ra"),
            "m-free": LoggedModelRef("m-free", "1", None),
        }
        self.traces = {"tr-1": "1"}

    def experiment(self, experiment_id: str) -> Owned | None:
        return self.experiments.get(experiment_id)

    def experiment_by_name(self, name: str) -> Owned | None:
        return self.experiments.get(self.names.get(name, ""))

    def run(self, run_id: str) -> RunRef | None:
        return self.runs.get(run_id)

    def model(self, name: str) -> Owned | None:
        return self.models.get(name)

    def logged_model(self, model_id: str) -> LoggedModelRef | None:
        return self.logged.get(model_id)

    def trace_experiment(self, trace_id: str) -> str | None:
        return self.traces.get(trace_id)


def decide(who: Principal, method: str, route: str, **params: object) -> str | None:
    return authorize(who, method, route, params, Catalogue())


API = "api/2.0/mlflow/"


def test_owner_tags_and_the_users_folder_name_the_owner() -> None:
    assert owned("1", "/Users/alice/x", {}).owner == "alice"
    assert owned("1", "/Users/alice/x", {"hubforge.owner": "bob"}).owner == "bob"
    assert owned("1", "Default", {}).owner is None
    assert owned("1", "x", {"hubforge.shared_with": " a, ,b "}).shared_with == {"a", "b"}


@pytest.mark.parametrize("prefix", ["api/2.0/mlflow/", "ajax-api/2.0/mlflow/"])
def test_runs_are_read_by_owner_sharing_groups_and_auditors(prefix: str) -> None:
    assert decide(ALICE, "GET", prefix + "runs/get", run_id="ra") is None
    assert "may not read run ra" in decide(BOB, "GET", prefix + "runs/get", run_id="ra")
    assert decide(ALICE, "GET", prefix + "runs/get", run_id="rb") is None  # shared with fraud
    assert decide(CAROL, "GET", prefix + "runs/get", run_uuid="ra") is None
    assert decide(ERIN, "GET", prefix + "runs/get", run_id="ra") is None
    assert decide(BOB, "GET", prefix + "runs/get", run_id="missing") is None  # MLflow's own 404
    assert "name the run" in decide(BOB, "GET", prefix + "runs/get")


@pytest.mark.parametrize(
    "path", ["runs/log-metric", "runs/log-batch", "runs/set-tag", "runs/update", "runs/log-inputs", "runs/outputs"]
)
def test_only_the_owner_writes_a_run_not_even_an_admin(path: str) -> None:
    assert decide(ALICE, "POST", API + path, run_id="ra") is None
    for who in (BOB, CAROL, ERIN):
        assert "alice's" in decide(who, "POST", API + path, run_id="ra")
    # alice may read bob's shared run, not write it.
    assert "bob's" in decide(ALICE, "POST", API + path, run_id="rb")
    assert "needs custom:experiments:write" in decide(ANALYST, "POST", API + path, run_id="ra")


def test_deleting_a_run_is_the_owners_or_an_admins() -> None:
    assert decide(ALICE, "POST", API + "runs/delete", run_id="ra") is None
    assert decide(ERIN, "POST", API + "runs/delete", run_id="ra") is None
    assert decide(BOB, "POST", API + "runs/delete", run_id="ra")


def test_new_runs_go_into_ones_own_or_a_shared_experiment() -> None:
    assert decide(ALICE, "POST", API + "runs/create", experiment_id="1") is None
    assert decide(ALICE, "POST", API + "runs/create", experiment_id="2") is None  # shared with fraud
    assert decide(ALICE, "POST", API + "runs/create", experiment_id="3") is None  # her folder
    assert "may not add to experiment 1" in decide(BOB, "POST", API + "runs/create", experiment_id="1")
    assert "may not add" in decide(CAROL, "POST", API + "runs/create", experiment_id="1")  # auditors read only
    assert "set_experiment" in decide(ALICE, "POST", API + "runs/create")
    assert decide(ERIN, "POST", API + "runs/create", experiment_id="0") is None


def test_experiments_are_changed_by_their_owner_and_owner_tags_by_nobody() -> None:
    assert decide(ALICE, "POST", API + "experiments/update", experiment_id="1", new_name="x") is None
    assert "bob's folder" in decide(
        ALICE, "POST", API + "experiments/update", experiment_id="1", new_name="/Users/bob/x"
    )
    assert "only the owner" in decide(BOB, "POST", API + "experiments/delete", experiment_id="1")
    assert decide(ERIN, "POST", API + "experiments/delete", experiment_id="1") is None
    tag = {"experiment_id": "1", "key": "hubforge.owner", "value": "bob"}
    assert "set by hubforge" in decide(ALICE, "POST", API + "experiments/set-experiment-tag", **tag)
    share = {"experiment_id": "1", "key": "hubforge.shared_with", "value": "ml-engineer"}
    assert decide(ALICE, "POST", API + "experiments/set-experiment-tag", **share) is None
    assert decide(BOB, "POST", API + "experiments/set-experiment-tag", **share)


def test_creating_experiments_in_another_persons_folder_is_refused() -> None:
    assert decide(ALICE, "POST", API + "experiments/create", name="/Users/alice/new") is None
    assert decide(ALICE, "POST", API + "experiments/create", name="/Shared/team") is None
    assert "bob's folder" in decide(ALICE, "POST", API + "experiments/create", name="/Users/bob/new")
    assert decide(ERIN, "POST", API + "experiments/create", name="/Users/bob/new") is None
    forged = [{"key": "hubforge.owner", "value": "bob"}]
    assert decide(ALICE, "POST", API + "experiments/create", name="/Shared/t", tags=forged)
    assert "needs custom:experiments:write" in decide(ANALYST, "POST", API + "experiments/create", name="x")
    elsewhere = {"name": "/Users/alice/x", "artifact_location": "mlflow-artifacts:/1/ra/artifacts"}
    assert "chosen by the platform" in decide(ALICE, "POST", API + "experiments/create", **elsewhere)


def test_experiments_by_name_are_read_like_by_id() -> None:
    get = API + "experiments/get-by-name"
    assert decide(ALICE, "GET", get, experiment_name="/Users/alice/churn") is None
    assert "experiment 4" in decide(ALICE, "GET", get, experiment_name="/Users/carol/private")
    assert decide(ALICE, "GET", get, experiment_name="/Users/nobody/none") is None  # MLflow's 404


def test_searches_name_readable_experiments() -> None:
    assert decide(ALICE, "POST", API + "runs/search", experiment_ids=["1", "2"]) is None
    assert "experiment 1" in decide(BOB, "POST", API + "runs/search", experiment_ids=["2", "1"])
    assert "name the experiments" in decide(BOB, "POST", API + "runs/search")
    assert decide(CAROL, "POST", API + "runs/search") is None
    assert decide(BOB, "POST", API + "logged-models/search", experiment_ids=["1"])
    assert decide(ALICE, "POST", "api/3.0/mlflow/traces/search", locations=[
        {"mlflow_experiment": {"experiment_id": "1"}}]) is None  # fmt: skip
    assert decide(
        BOB, "POST", "api/3.0/mlflow/traces/search", locations=[{"mlflow_experiment": {"experiment_id": "1"}}]
    )


def test_registry_lifecycle_is_for_registry_managers() -> None:
    assert decide(ALICE, "POST", API + "registered-models/create", name="new") is None
    assert "may not register" in decide(ANALYST, "POST", API + "registered-models/create", name="new")
    assert decide(ALICE, "PATCH", API + "registered-models/update", name="churn", description="d") is None
    assert decide(ALICE, "PATCH", API + "registered-models/update", name="ranker")  # bob's
    assert decide(BOB, "PATCH", API + "registered-models/update", name="churn") is None  # manager
    lifecycle = [
        ("POST", "registered-models/alias"),
        ("DELETE", "registered-models/delete"),
        ("POST", "model-versions/transition-stage"),
        ("POST", "registered-models/rename"),
    ]
    for method, path in lifecycle:
        assert "custom:registry:manage" in decide(ALICE, method, API + path, name="churn")
        assert decide(BOB, method, API + path, name="churn") is None
    # The deployments' aliases are nobody's to set by hand, registry managers' included.
    for method in ("POST", "DELETE"):
        for alias in ("production", "Staging", "canary"):
            refusal = decide(BOB, method, API + "registered-models/alias", name="churn", alias=alias, version="1")
            assert refusal and "governance service's deployments" in refusal
        assert decide(BOB, method, API + "registered-models/alias", name="churn", alias="champion") is None
    # Reading: owner, groups it is shared with, managers; an analyst in fraud reads ranker.
    assert decide(ANALYST, "GET", API + "registered-models/get", name="ranker") is None
    assert decide(ANALYST, "GET", API + "registered-models/get", name="churn")
    assert decide(BOB, "GET", API + "model-versions/get", name="churn", version="1") is None
    assert decide(ANALYST, "GET", "model-versions/get-artifact", name="churn", version="1")


def test_a_new_version_needs_the_model_and_a_readable_source_run() -> None:
    assert decide(ALICE, "POST", API + "model-versions/create", name="churn", source="s", run_id="ra") is None
    assert decide(ALICE, "POST", API + "model-versions/create", name="churn", run_id="rb") is None  # shared
    assert "may not read run rc" in decide(ALICE, "POST", API + "model-versions/create", name="churn", run_id="rc")
    assert decide(ALICE, "POST", API + "model-versions/create", name="ranker", run_id="ra")
    assert decide(BOB, "POST", API + "model-versions/create", name="churn", run_id="ra") is None


@pytest.mark.parametrize(
    ("method", "path", "who", "allowed"),
    [
        ("GET", "1/ra/artifacts/model/MLmodel", ALICE, True),
        ("GET", "1/ra/artifacts/model/MLmodel", BOB, False),
        ("PUT", "1/ra/artifacts/notebook.ipynb", ALICE, True),
        ("PUT", "1/ra/artifacts/notebook.ipynb", ERIN, False),
        ("PUT", "2/ra/artifacts/x", ALICE, False),  # run ra is not in experiment 2
        ("PUT", "1/models/m-a/artifacts/x", ALICE, True),
        ("PUT", "1/models/m-a/artifacts/x", BOB, False),
        ("PUT", "1/models/m-missing/artifacts/x", ALICE, False),  # nothing under objects that do not exist
        ("PUT", "2/models/m-a/artifacts/x", ALICE, False),  # m-a is experiment 1's
        ("PUT", "1/models/m-a/artifacts/x", ANALYST, False),  # no write scope
        ("PUT", "1/models", ALICE, False),
        ("PUT", "1/traces/tr-1/artifacts/traces.json", ALICE, True),
        ("PUT", "1/traces/tr-1/artifacts/traces.json", BOB, False),
        ("PUT", "1/traces/tr-1/artifacts/traces.json", ANALYST, False),
        ("PUT", "1/traces/tr-missing/artifacts/traces.json", ALICE, False),
        ("PUT", "9/traces/tr-1/artifacts/traces.json", ALICE, False),  # tr-1 is experiment 1's
        ("PUT", "9/ra/artifacts/x", ALICE, False),  # no experiment 9
        ("DELETE", "1/ra/artifacts/x", BOB, False),
        ("GET", "../1/ra/x", ALICE, False),
        ("GET", "mlruns/1/ra", ALICE, False),
    ],
)
def test_proxied_artifacts_follow_their_run(method: str, path: str, who: Principal, allowed: bool) -> None:
    refusal = decide(who, method, "api/2.0/mlflow-artifacts/artifacts/" + path)
    assert (refusal is None) is allowed, refusal


def test_artifact_listings_and_multipart_uploads() -> None:
    assert decide(ALICE, "GET", "api/2.0/mlflow-artifacts/artifacts", path="1/ra/artifacts") is None
    assert decide(BOB, "GET", "api/2.0/mlflow-artifacts/artifacts", path="1/ra/artifacts")
    assert decide(BOB, "GET", "api/2.0/mlflow-artifacts/artifacts")  # the root lists every experiment
    assert decide(ALICE, "POST", "api/2.0/mlflow-artifacts/mpu/create/1/ra/artifacts/big.bin") is None
    assert decide(BOB, "POST", "api/2.0/mlflow-artifacts/mpu/complete/1/ra/artifacts/big.bin")


def test_logged_models_and_traces_follow_their_experiment_and_run() -> None:
    assert decide(ALICE, "GET", API + "logged-models/m-a") is None
    assert decide(BOB, "GET", API + "logged-models/m-a")
    assert decide(ALICE, "PATCH", API + "logged-models/m-a/tags") is None
    assert decide(ERIN, "PATCH", API + "logged-models/m-a/tags")  # it is alice's run's
    assert decide(ERIN, "DELETE", API + "logged-models/m-free") is None  # experiment's manager
    assert decide(ALICE, "POST", API + "logged-models", experiment_id="1", source_run_id="ra") is None
    assert decide(BOB, "POST", API + "logged-models", experiment_id="2", source_run_id="ra")
    assert decide(ALICE, "GET", "api/3.0/mlflow/traces/tr-1") is None
    assert decide(BOB, "GET", "api/3.0/mlflow/traces/tr-1")
    start = {"trace": {"trace_info": {"trace_location": {"mlflow_experiment": {"experiment_id": "1"}}}}}
    assert decide(ALICE, "POST", "api/3.0/mlflow/traces", **start) is None
    assert decide(BOB, "POST", "api/3.0/mlflow/traces", **start)


def test_the_ui_pages_load_and_anything_unknown_is_for_admins() -> None:
    for path in ("", "static-files/lib/app.js", "version", "graphql", "ajax-api/3.0/mlflow/server-info"):
        assert decide(ANALYST, "GET", path) is None, path
    for method, path in (
        ("POST", "ajax-api/3.0/mlflow/gateway/secrets/create"),
        ("GET", "ajax-api/3.0/mlflow/assistant/config"),
        ("POST", "api/2.0/mlflow/runs/create/../../gateway"),
        ("GET", "api/2.0/mlflow/a-future-endpoint"),
        ("POST", "ajax-api/3.0/jobs/search"),
        ("DELETE", "api/3.0/mlflow/workspaces/default"),
    ):
        assert "platform admins" in decide(BOB, method, path), path
        assert decide(ERIN, method, path) is None


def test_every_tracking_and_registry_endpoint_of_mlflow_has_a_rule() -> None:
    """MLflow's own endpoint list: the classic tracking and registry ones are all decided."""
    from mlflow.server.handlers import get_endpoints

    core = ("/mlflow/experiments/", "/mlflow/runs/", "/mlflow/metrics/", "/mlflow/registered-models/",
            "/mlflow/model-versions/", "/mlflow/artifacts/list")  # fmt: skip
    missing = []
    for path, handler, methods in get_endpoints():
        rest = path.split(".0/", 1)[-1]
        if not any(part in path for part in core) or handler.__name__ == "_not_implemented":
            continue
        for method in methods:
            if (method, rest) not in RULES:
                missing.append(f"{method} {path} ({handler.__name__})")
    assert missing == []


@pytest.mark.parametrize(("size", "limit"), [(0, 3), (10, 3), (10, 10), (25, 4), (7, 100)])
def test_filtered_pages_cover_every_readable_item_once(size: int, limit: int) -> None:
    items = list(range(size))

    def fetch(offset: int, count: int) -> list[int]:
        return items[offset : offset + count]

    for readable in (lambda i: i % 3 == 0, lambda i: True, lambda i: False, lambda i: i > size - 3):
        seen, offset = [], 0
        for _ in itertools.count():
            page, following = filtered_page(fetch, readable, limit, offset)
            assert len(page) <= limit
            seen += page
            if following is None:
                break
            assert page, "a page that is not the last is never empty"
            offset = following
        assert seen == [i for i in items if readable(i)]
