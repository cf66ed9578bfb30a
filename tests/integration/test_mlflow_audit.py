"""The MLflow service's audit events: a real ``mlflow server --app-name hubforge`` behind the
fake hub, started as the hub starts it (``HUBFORGE_DATA`` set), its spool read back.

One worker, so that one spool holds every event in the order the answers went out: once a
later request's event is on disk, an event an earlier request should not have made would
be there too. (Workers' own spools are checked in-process below.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.hub import FakeHub
from harness.mlflow_app import HOST, PREFIX, api, create_experiment, mlflow_fake_hub, mlflow_server, user_model
from harness.platform import wait_for
from hubforge.contract import DATA_ENV
from hubforge.events.spool import read_spool
from hubforge.hub.mlflow.audit import MODEL_SCHEMA, RUN_SCHEMA, service_spool

V2 = PREFIX + "api/2.0/mlflow"
AJAX = PREFIX + "ajax-api/2.0/mlflow"
ALICE = api("alice-token")
CAROL = api("carol-token")
FROM_HERE = {"observer": "mlflow", "client_address": "127.0.0.1"}


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    hub = mlflow_fake_hub()
    alice = user_model("alice")
    alice["scopes"].append("custom:registry:manage")  # she sets aliases
    server_token = {**alice, "scopes": [*alice["scopes"], "access:servers!server=alice/"]}
    hub.tokens.update({"alice-token": alice, "alice-server-token": server_token})
    hub.start()
    yield hub
    hub.shutdown()
    hub.server_close()


@pytest.fixture(scope="module")
def served(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    """A client of the gated MLflow (one worker) and its spool folder."""
    data = tmp_path_factory.mktemp("mlflow-audit")
    with pytest.MonkeyPatch.context() as env:
        env.setenv(DATA_ENV, str(data))  # as the hub starts its services
        with (
            mlflow_server(data, hub) as url,
            httpx.Client(base_url=url, headers={"Host": HOST}, timeout=60) as client,
        ):
            yield client, data / "events" / "mlflow"


@pytest.fixture(scope="module")
def client(served: tuple[httpx.Client, Path]) -> httpx.Client:
    return served[0]


@pytest.fixture(scope="module")
def experiment(client: httpx.Client) -> str:
    return create_experiment(client, ALICE)


def events(served: tuple[httpx.Client, Path], **match: Any) -> list[dict[str, Any]]:
    """The spool's records whose fields (and ``resource``) are ``match``'s."""
    return [r for r in read_spool(served[1]) if all(r.get(key) == value for key, value in match.items())]


def one(served: tuple[httpx.Client, Path], **match: Any) -> dict[str, Any]:
    """The one record ``match`` names, once the spool has it."""
    found = wait_for(lambda: events(served, **match), 15, f"the audit event {match}")
    assert len(found) == 1, found
    return dict(found[0])


def ok(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def new_run(client: httpx.Client, experiment: str, headers: dict[str, str] = ALICE, **body: Any) -> str:
    answer = ok(client.post(f"{V2}/runs/create", json={"experiment_id": experiment, **body}, headers=headers))
    return str(answer["run"]["info"]["run_id"])


def test_runs_created_in_any_spelling_are_recorded_with_mlflows_ids(
    served: tuple[httpx.Client, Path], client: httpx.Client, experiment: str
) -> None:
    camel = ok(client.post(f"{V2}/runs/create", json={"experimentId": experiment}, headers=ALICE))
    snake = ok(client.post(f"{AJAX}/runs/create", json={"experiment_id": experiment}, headers=ALICE))
    for answer in (camel, snake):
        run_id = answer["run"]["info"]["run_id"]
        event = one(served, run_id=run_id)
        assert event["__schema__"] == RUN_SCHEMA
        assert event["__emitter__"] == "mlflow"
        assert (event["user"], event["action"], event["outcome"]) == ("alice", "created", "success")
        assert event["resource"] == {"type": "run", "id": run_id}
        assert event["experiment_id"] == experiment
        assert event["origin"] == FROM_HERE, "a person's own token names no server"


def test_a_run_finished_by_run_uuid_is_recorded_with_its_status(
    served: tuple[httpx.Client, Path], client: httpx.Client, experiment: str
) -> None:
    run_id = new_run(client, experiment)
    ok(client.post(f"{V2}/runs/update", json={"run_uuid": run_id, "run_name": "renamed"}, headers=ALICE))
    ended = {"run_uuid": run_id, "status": "FAILED", "end_time": int(time.time() * 1000)}
    ok(client.post(f"{V2}/runs/update", json=ended, headers=ALICE))
    event = one(served, run_id=run_id, action="finished")
    assert (event["user"], event["outcome"], event["status"]) == ("alice", "success", "FAILED")
    assert event["resource"] == {"type": "run", "id": run_id}
    assert event["experiment_id"] == experiment
    # The rename went out before the finish: had it been recorded, it would be on disk by now.
    assert [e["action"] for e in events(served, run_id=run_id)] == ["created", "finished"]


def test_models_versions_and_aliases_are_recorded(
    served: tuple[httpx.Client, Path], client: httpx.Client, experiment: str
) -> None:
    run_id = new_run(client, experiment)
    model = f"model-{uuid.uuid4().hex[:8]}"
    ok(client.post(f"{V2}/registered-models/create", json={"name": model}, headers=ALICE))
    source = {"name": model, "source": f"runs:/{run_id}/model", "run_id": run_id}
    version = ok(client.post(f"{V2}/model-versions/create", json=source, headers=ALICE))["model_version"]["version"]
    alias = {"name": model, "alias": "champion", "version": version}
    ok(client.post(f"{AJAX}/registered-models/alias", json=alias, headers=ALICE))
    unset = {"name": model, "alias": "champion"}
    ok(client.request("DELETE", f"{V2}/registered-models/alias", json=unset, headers=ALICE))
    again = client.post(f"{V2}/registered-models/create", json={"name": model}, headers=ALICE)
    assert again.status_code == 400, again.text  # MLflow's own error: the name is taken

    one(served, model_name=model, outcome="failure")  # the last: the others are on disk before it
    recorded = events(served, model_name=model)
    summary = [(e["__schema__"], e["user"], e["action"], e["outcome"], e["resource"]["id"]) for e in recorded]
    assert summary == [
        (MODEL_SCHEMA, "alice", "registered", "success", model),
        (MODEL_SCHEMA, "alice", "version_created", "success", f"{model}/{version}"),
        (MODEL_SCHEMA, "alice", "alias_set", "success", model),
        (MODEL_SCHEMA, "alice", "alias_removed", "success", model),
        (MODEL_SCHEMA, "alice", "registered", "failure", model),
    ]
    assert recorded[1]["version"] == recorded[2]["version"] == version
    assert recorded[2]["alias"] == recorded[3]["alias"] == "champion"
    assert all(e["resource"]["type"] == "model" and e["origin"] == FROM_HERE for e in recorded)


def test_refusals_are_recorded_as_denied_for_who_was_refused(
    served: tuple[httpx.Client, Path], client: httpx.Client, experiment: str
) -> None:
    run_id = new_run(client, experiment)
    finish = {"run_uuid": run_id, "status": "KILLED"}
    refused = client.post(f"{V2}/runs/update", json=finish, headers=CAROL)  # the guarded store refuses
    assert refused.status_code == 403, refused.text
    event = one(served, run_id=run_id, action="finished")
    assert (event["user"], event["outcome"], event["status"]) == ("carol", "denied", "KILLED")
    assert event["resource"] == {"type": "run", "id": run_id}

    refused = client.post(f"{V2}/runs/create", json={"experimentId": experiment}, headers=CAROL)  # the gate refuses
    assert refused.status_code == 403, refused.text
    event = one(served, user="carol", action="created")
    assert (event["outcome"], event["experiment_id"]) == ("denied", experiment)
    assert event["resource"] == {"type": "experiment", "id": experiment}
    assert "run_id" not in event


def test_a_body_naming_someone_else_does_not_change_who(
    served: tuple[httpx.Client, Path], client: httpx.Client
) -> None:
    experiment = create_experiment(client, ALICE)
    run_id = new_run(client, experiment, user_id="bob")  # the gate makes it alice's
    event = one(served, run_id=run_id)
    assert (event["user"], event["outcome"]) == ("alice", "success")

    claim = {"experiment_id": experiment, "tags": [{"key": "mlflow.user", "value": "bob"}]}
    refused = client.post(f"{V2}/runs/create", json=claim, headers=ALICE)
    assert refused.status_code == 400, refused.text  # what may never be written: refused by policy
    event = one(served, experiment_id=experiment, outcome="denied")
    assert (event["user"], event["action"]) == ("alice", "created")
    assert events(served, user="bob") == []


def test_a_servers_token_names_its_server(
    served: tuple[httpx.Client, Path], client: httpx.Client, experiment: str
) -> None:
    run_id = new_run(client, experiment, api("alice-server-token"))
    event = one(served, run_id=run_id)
    assert event["user"] == "alice"
    assert event["origin"] == {**FROM_HERE, "server": "alice/"}


def test_logging_and_reading_record_nothing(
    served: tuple[httpx.Client, Path], client: httpx.Client, experiment: str
) -> None:
    run_id = new_run(client, experiment)
    metric = {"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 1, "step": 0}
    ok(client.post(f"{V2}/runs/log-metric", json=metric, headers=ALICE))
    ok(client.get(f"{V2}/runs/get", params={"run_id": run_id}, headers=ALICE))
    later = new_run(client, experiment)
    one(served, run_id=later)
    assert [e["action"] for e in events(served, run_id=run_id)] == ["created"]


def test_each_worker_spools_under_its_own_emitter_and_none_without_a_data_folder(tmp_path: Path) -> None:
    first, second = service_spool(tmp_path), service_spool(tmp_path)
    assert first is not None and second is not None
    assert (first.emitter, first.directory) == ("mlflow", tmp_path / "events" / "mlflow")
    assert (second.emitter, second.directory) == ("mlflow-2", tmp_path / "events" / "mlflow-2")
    assert service_spool(None) is None


def test_behind_the_proxy_the_client_is_the_last_hop_it_appended(
    served: tuple[httpx.Client, Path], client: httpx.Client, experiment: str
) -> None:
    proxied = {**ALICE, "X-Forwarded-For": "198.51.100.1, 203.0.113.7"}  # the proxy is on loopback
    run_id = new_run(client, experiment, proxied)
    assert one(served, run_id=run_id)["origin"]["client_address"] == "203.0.113.7"
