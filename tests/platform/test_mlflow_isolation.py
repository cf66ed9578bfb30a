"""Per-person MLflow: a real hub, real personas' tokens, MLflow's own REST API.

alice is a data scientist, bob an ML engineer (registry manager), carol an ML lead
(reads everything for audit), erin the platform admin. Each talks to
``/services/mlflow/`` with their own hub API token, as the MLflow client does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from harness.platform import CHROMIUM, CHROMIUM_FLAGS, DEMO_PASSWORD, PERSONA_USERS, api

MLFLOW = "/services/mlflow/api/2.0/mlflow/"


@pytest.fixture
def clients(platform, session_for) -> Iterator[dict[str, httpx.Client]]:
    """An MLflow REST client per persona, each with that person's hub token."""
    opened = {}
    for persona in ("data-scientist", "ml-engineer", "ml-lead", "platform-admin", "data-steward"):
        session, user = session_for(persona)
        opened[user] = api(platform.url, session.new_token(user, note="mlflow isolation"))
    yield opened
    for client in opened.values():
        client.close()


def ok(resp: httpx.Response) -> dict:
    assert resp.status_code == 200, f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}"
    return resp.json()


def refused(resp: httpx.Response, *words: str) -> str:
    assert resp.status_code == 403, f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}"
    body = resp.json()
    assert body["error_code"] == "PERMISSION_DENIED"
    for word in words:
        assert word in body["message"], body["message"]
    return body["message"]


def experiment_with_run(client: httpx.Client, user: str) -> tuple[str, str]:
    """A fresh experiment of ``user``'s with one run that logged a metric."""
    name = f"/Users/{user}/isolation-{uuid.uuid4().hex[:8]}"
    experiment = ok(client.post(MLFLOW + "experiments/create", json={"name": name}))["experiment_id"]
    run = ok(client.post(MLFLOW + "runs/create", json={"experiment_id": experiment}))["run"]["info"]["run_id"]
    ok(client.post(MLFLOW + "runs/log-metric", json={"run_id": run, "key": "loss", "value": 0.5, "timestamp": 1}))
    return experiment, run


def test_two_people_cannot_read_or_write_each_others_runs(clients) -> None:
    alice, bob = clients["alice"], clients["bob"]
    alice_exp, alice_run = experiment_with_run(alice, "alice")
    bob_exp, bob_run = experiment_with_run(bob, "bob")

    for reader, exp, run, owner in ((bob, alice_exp, alice_run, "alice"), (alice, bob_exp, bob_run, "bob")):
        refused(reader.get(MLFLOW + "runs/get", params={"run_id": run}), "may not read run")
        refused(reader.get(MLFLOW + "experiments/get", params={"experiment_id": exp}))
        refused(reader.get(MLFLOW + "metrics/get-history", params={"run_id": run, "metric_key": "loss"}))
        refused(reader.post(MLFLOW + "runs/search", json={"experiment_ids": [exp]}))
        refused(reader.get(MLFLOW + "artifacts/list", params={"run_id": run}))
        refused(reader.get("/services/mlflow/get-artifact", params={"run_uuid": run, "path": "x"}))
        # Writes into the other person's run, each kind MLflow offers.
        metric = {"run_id": run, "key": "loss", "value": 9.9, "timestamp": 2}
        refused(reader.post(MLFLOW + "runs/log-metric", json=metric), f"{owner}'s")
        refused(reader.post(MLFLOW + "runs/log-batch", json={"run_id": run, "metrics": [metric]}))
        refused(reader.post(MLFLOW + "runs/set-tag", json={"run_id": run, "key": "k", "value": "v"}))
        refused(reader.post(MLFLOW + "runs/update", json={"run_id": run, "status": "KILLED"}))
        refused(reader.post(MLFLOW + "runs/delete", json={"run_id": run}))
        refused(reader.post(MLFLOW + "runs/create", json={"experiment_id": exp}))
        refused(reader.post(MLFLOW + "experiments/update", json={"experiment_id": exp, "new_name": "mine"}))
        refused(reader.post(MLFLOW + "experiments/delete", json={"experiment_id": exp}))

    # Nothing leaked into the owners' runs, and each still sees their own.
    history = ok(alice.get(MLFLOW + "metrics/get-history", params={"run_id": alice_run, "metric_key": "loss"}))
    assert [m["value"] for m in history["metrics"]] == [0.5]
    assert ok(alice.get(MLFLOW + "runs/get", params={"run_id": alice_run}))["run"]["info"]["status"] == "RUNNING"
    # Searches list only what the person may read.
    names = {e["name"] for e in ok(bob.post(MLFLOW + "experiments/search", json={"max_results": 1000}))["experiments"]}
    assert not any(name.startswith("/Users/alice/") for name in names)
    assert any(name.startswith("/Users/bob/") for name in names)
    # The MLflow UI's GraphQL answers nothing about a run one may not read.
    query = {"query": "query q($id: String) { mlflowGetRun(input: {runId: $id}) { run { info { runId } } } }",
             "variables": {"id": alice_run}}  # fmt: skip
    graphql = bob.post("/services/mlflow/graphql", json=query)
    assert graphql.status_code == 200 and graphql.json()["data"]["mlflowGetRun"] is None, graphql.text
    assert "PERMISSION_DENIED: bob may not read run" in graphql.json()["errors"][0]  # MLflow sends messages
    mine = alice.post("/services/mlflow/graphql", json=query).json()["data"]["mlflowGetRun"]
    assert mine["run"]["info"]["runId"] == alice_run


def test_nobody_takes_another_persons_folder_or_ownership(clients) -> None:
    alice, bob = clients["alice"], clients["bob"]
    refused(bob.post(MLFLOW + "experiments/create", json={"name": "/Users/alice/squat"}), "alice's folder")
    forged = {"name": f"/Shared/{uuid.uuid4().hex[:8]}", "tags": [{"key": "hubforge.owner", "value": "alice"}]}
    refused(bob.post(MLFLOW + "experiments/create", json=forged), "hubforge.owner")
    experiment, _ = experiment_with_run(alice, "alice")
    tags = ok(alice.get(MLFLOW + "experiments/get", params={"experiment_id": experiment}))["experiment"]["tags"]
    assert {"key": "hubforge.owner", "value": "alice"} in tags
    take = {"experiment_id": experiment, "key": "hubforge.owner", "value": "bob"}
    refused(alice.post(MLFLOW + "experiments/set-experiment-tag", json=take), "set by hubforge")
    # Runs in the shared Default experiment belong to nobody's space.
    refused(alice.post(MLFLOW + "runs/create", json={}), "set_experiment")


def test_sharing_with_a_group_lets_it_read_and_add_runs_but_not_write_yours(clients) -> None:
    alice, bob = clients["alice"], clients["bob"]
    experiment, run = experiment_with_run(alice, "alice")
    share = {"experiment_id": experiment, "key": "hubforge.shared_with", "value": "ml-engineer"}
    refused(bob.post(MLFLOW + "experiments/set-experiment-tag", json=share), "only the owner")
    ok(alice.post(MLFLOW + "experiments/set-experiment-tag", json=share))

    assert ok(bob.get(MLFLOW + "runs/get", params={"run_id": run}))["run"]["info"]["run_id"] == run
    found = ok(bob.post(MLFLOW + "runs/search", json={"experiment_ids": [experiment]}))["runs"]
    assert [r["info"]["run_id"] for r in found] == [run]
    names = {e["name"] for e in ok(bob.post(MLFLOW + "experiments/search", json={}))["experiments"]}
    assert any(name.startswith("/Users/alice/isolation-") for name in names)
    # bob adds a run of his own to the shared experiment, and still cannot write alice's.
    own = ok(bob.post(MLFLOW + "runs/create", json={"experiment_id": experiment}))["run"]["info"]
    assert own["user_id"] == "bob"
    metric = {"run_id": run, "key": "loss", "value": 1.0, "timestamp": 3}
    refused(bob.post(MLFLOW + "runs/log-metric", json=metric), "alice's")
    ok(bob.post(MLFLOW + "runs/log-metric", json={**metric, "run_id": own["run_id"]}))
    # ...and alice cannot write bob's run in her own experiment.
    refused(alice.post(MLFLOW + "runs/log-metric", json={**metric, "run_id": own["run_id"]}), "bob's")


def test_auditors_and_admins_read_everything_and_write_no_ones_runs(clients) -> None:
    experiment, run = experiment_with_run(clients["alice"], "alice")
    for reader in ("carol", "erin"):  # ml-lead (custom:audit:read), platform admin
        client = clients[reader]
        assert ok(client.get(MLFLOW + "runs/get", params={"run_id": run}))["run"]["info"]["user_id"] == "alice"
        assert ok(client.post(MLFLOW + "runs/search", json={"experiment_ids": [experiment]}))["runs"]
        metric = {"run_id": run, "key": "loss", "value": 2.0, "timestamp": 4}
        refused(client.post(MLFLOW + "runs/log-metric", json=metric), "alice's")


def test_ml_engineers_manage_the_registry_and_data_scientists_own_their_models(clients) -> None:
    alice, bob, dan = clients["alice"], clients["bob"], clients["dan"]
    _, run = experiment_with_run(alice, "alice")
    name = f"churn-{uuid.uuid4().hex[:8]}"
    model = ok(alice.post(MLFLOW + "registered-models/create", json={"name": name}))["registered_model"]
    assert {"key": "hubforge.owner", "value": "alice"} in model["tags"]
    version = {"name": name, "source": f"runs:/{run}/model", "run_id": run}
    assert ok(alice.post(MLFLOW + "model-versions/create", json=version))["model_version"]["version"] == "1"
    # The lifecycle is the registry managers': alice may not set an alias, bob may.
    alias = {"name": name, "alias": "champion", "version": "1"}
    refused(alice.post(MLFLOW + "registered-models/alias", json=alias), "custom:registry:manage")
    ok(bob.post(MLFLOW + "registered-models/alias", json=alias))
    got = ok(alice.get(MLFLOW + "registered-models/alias", params={"name": name, "alias": "champion"}))
    assert got["model_version"]["version"] == "1"
    # bob manages the registry, yet registers only what he may read: not alice's unshared
    # run (its artifacts would be his to read through the version), a run of his own, yes.
    refused(bob.post(MLFLOW + "model-versions/create", json=version), "bob may not read run")
    _, bobs_run = experiment_with_run(bob, "bob")
    his = {"name": name, "source": f"runs:/{bobs_run}/model", "run_id": bobs_run}
    assert ok(bob.post(MLFLOW + "model-versions/create", json=his))["model_version"]["version"] == "2"
    # A data steward may neither register models nor see them as theirs.
    refused(dan.post(MLFLOW + "registered-models/create", json={"name": name + "-dan"}), "may not register")
    refused(bob.post(MLFLOW + "experiments/create", json={"name": "/Users/bob/x", "tags": [
        {"key": "hubforge.owner", "value": "alice"}]}))  # fmt: skip


def test_the_platform_admin_persona_from_a_group_is_a_hub_and_mlflow_admin(clients) -> None:
    """erin is in the platform-admin group: the hub and MLflow treat her as an admin."""
    assert clients["erin"].get("/hub/api/user").json()["admin"] is True
    assert clients["alice"].get("/hub/api/user").json()["admin"] is False
    _, run = experiment_with_run(clients["alice"], "alice")
    # Deleting and restoring another person's run is an admin's; bob (ml-engineer) may not.
    refused(clients["bob"].post(MLFLOW + "runs/delete", json={"run_id": run}))
    ok(clients["erin"].post(MLFLOW + "runs/delete", json={"run_id": run}))
    ok(clients["erin"].post(MLFLOW + "runs/restore", json={"run_id": run}))
    # An admin still writes into nobody's run.
    refused(clients["erin"].post(MLFLOW + "runs/log-parameter", json={"run_id": run, "key": "k", "value": "v"}))


def test_every_persona_token_is_known(clients) -> None:
    """The fixture really logged each persona in: the hub named who each token is."""
    assert set(clients) == {PERSONA_USERS[p] for p in
                            ("data-scientist", "ml-engineer", "ml-lead", "platform-admin", "data-steward")}  # fmt: skip
    for user, client in clients.items():
        assert client.get("/hub/api/user").json()["name"] == user


def searched_experiments(request: Any) -> set[str]:
    """The experiment ids a browser's ``runs/search`` request names, in its query or JSON body."""
    query = parse_qs(urlsplit(request.url).query)
    ids = set(query.get("experiment_ids", []) + query.get("experimentIds", []))
    try:
        body = json.loads(request.post_data or "{}")
    except ValueError:
        body = {}
    if isinstance(body, dict):
        for key in ("experiment_ids", "experimentIds"):
            if isinstance(body.get(key), list):
                ids |= {str(i) for i in body[key]}
    return ids


def test_the_mlflow_ui_shows_a_person_their_runs_and_not_anothers(platform, clients, artifacts) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    alice_exp, alice_run = experiment_with_run(clients["alice"], "alice")
    bob_exp, bob_run = experiment_with_run(clients["bob"], "bob")
    refusals: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("response", lambda r: refusals.append(r.url) if r.status == 403 else None)
            page.goto(f"{platform.url}/hub/login")
            page.fill("#username_input", "alice")
            page.fill("#password_input", DEMO_PASSWORD)
            page.click("#login_submit")
            page.wait_for_url("**/hub/**")
            # Her run, through the hub's OAuth into MLflow: the UI names her and the experiment.
            page.goto(f"{platform.url}/services/mlflow/#/experiments/{alice_exp}/runs/{alice_run}")
            page.get_by_text("Created by").wait_for(timeout=60_000)
            page.get_by_text("/Users/alice/isolation-").first.wait_for()
            assert page.get_by_role("link", name="alice").count() >= 1
            page.screenshot(path=str(artifacts / "mlflow-ui-alice-run.png"))
            before = len(refusals)
            # bob's experiment: the UI loads it (GraphQL in model-training view), is told she may
            # not read it, and shows neither his runs nor any run search that was let through.
            # Searches of her own page may still answer now: only those naming his experiment count.
            searched: list[tuple[int, set[str]]] = []

            def on_response(response: Any) -> None:
                if "/runs/search" in response.url:
                    searched.append((response.status, searched_experiments(response.request)))

            page.on("response", on_response)
            page.goto(f"{platform.url}/services/mlflow/#/experiments/{bob_exp}")
            page.get_by_text(f"alice may not read experiment {bob_exp}").wait_for(timeout=60_000)
            assert bob_run not in page.content()
            assert all(status == 403 for status, ids in searched if str(bob_exp) in ids), searched
            page.screenshot(path=str(artifacts / "mlflow-ui-alice-on-bobs-experiment.png"))
        finally:
            browser.close()
    # Nothing alice's own pages asked about her run or experiment was refused.
    assert not any("/runs/" in url or "/experiments/" in url for url in refusals[:before]), refusals


def test_kept_run_data_replays_through_the_hub_as_its_owner_only(
    platform, clients, session_for, tmp_path, monkeypatch
) -> None:
    """What a kernel kept while MLflow was away goes in with the person's own token: alice's
    entry opens and ends her run; an entry aimed at bob's run is refused and set aside."""
    from mlflow import MlflowClient

    from hubforge.server_extension.kernel.tracker import PENDING
    from hubforge.server_extension.pending import PendingRun, list_pending, write_pending
    from hubforge.server_extension.replay import replay

    _, bob_run = experiment_with_run(clients["bob"], "bob")
    session, _ = session_for("data-scientist")
    uri = f"{platform.url}/services/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", session.new_token("alice", note="replay"))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    name = f"/Users/alice/replayed-{uuid.uuid4().hex[:8]}.ipynb"
    artifact = tmp_path / "requirements.txt"
    artifact.write_text("scikit-learn==1.0\n")
    mine = write_pending(
        tmp_path / "spool",
        PendingRun(tracking_uri=uri, run_id=None, experiment_name=name, tags={"mlflow.user": "alice"}),
        [["m", PENDING, "hubforge.cell.duration_s", float(i), 1_000 + i, i] for i in range(1, 4)],
        [(artifact, "environment")],
    )
    theirs = write_pending(
        tmp_path / "spool",
        PendingRun(tracking_uri=uri, run_id=bob_run, status="KILLED"),
        [["m", bob_run, "loss", 9.9, 5, 0]],
    )

    report = replay(tmp_path / "spool", uri, client=MlflowClient(uri))

    assert report.rejected == [theirs.name] and len(report.delivered) == 1
    assert "MLflow refused it" in (tmp_path / "spool" / "rejected" / theirs.name / "reason.txt").read_text()
    assert list_pending(tmp_path / "spool") == [] and not mine.exists()
    alice = clients["alice"]
    exp = ok(alice.get(MLFLOW + "experiments/get-by-name", params={"experiment_name": name}))["experiment"]
    (run,) = ok(alice.post(MLFLOW + "runs/search", json={"experiment_ids": [exp["experiment_id"]]}))["runs"]
    assert run["info"]["status"] == "FINISHED" and run["info"]["user_id"] == "alice"
    history = ok(
        alice.get(
            MLFLOW + "metrics/get-history",
            params={"run_id": run["info"]["run_id"], "metric_key": "hubforge.cell.duration_s"},
        )
    )
    assert sorted(m["step"] for m in history["metrics"]) == [1, 2, 3]
    listed = ok(alice.get(MLFLOW + "artifacts/list", params={"run_id": run["info"]["run_id"], "path": "environment"}))
    assert [f["path"] for f in listed["files"]] == ["environment/requirements.txt"]
    bob_view = ok(clients["bob"].get(MLFLOW + "runs/get", params={"run_id": bob_run}))["run"]
    assert bob_view["info"]["status"] == "RUNNING" and bob_view["data"]["metrics"][0]["value"] == 0.5
