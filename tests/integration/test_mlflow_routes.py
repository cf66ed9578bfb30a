"""Every route MLflow serves, in every spelling it accepts, tried on another person's objects.

The requests are generated from MLflow's own route table (the Flask app's
``url_map``, the one ``mlflow server`` serves) and each route's protobuf request
message (``mlflow.server.handlers.HANDLERS``), and for GraphQL from the schema's
root fields. Each route is sent in every spelling MLflow's parsing accepts:
snake_case and camelCase (the field's JSON name), ``run_uuid``/``request_id``
aliases, the query string or the JSON body (a GET's JSON body too), under
``api/`` and ``ajax-api/``, 2.0 and 3.0 as MLflow registers them. The few routes
MLflow serves without a request message are listed in ``HAND`` with the
parameters their views read; a route in neither fails the test, so an MLflow
upgrade cannot add an unexamined one.

alice owns an experiment, a run with a param, metrics, a tag and an artifact, a
logged model, a trace and a registered model with a version; none
is shared. Another experiment of hers is shared with the group ``vision``.
Against a real ``mlflow server --app-name hubforge`` (behind a hub faked at the
transport) the requests go out as bob (another person), carol (in ``vision``: a
share, but not on these objects), mallory (no access to MLflow) and audrey (an
auditor, who reads everything and writes nothing). Asserted: no answer to bob,
carol or mallory carries anything of alice's unshared objects (a marker kept in
their data, never sent in a request) or is a 5xx, and after each person's sweep
every one of alice's objects reads exactly as before. As alice the same generator must reach
her data, so that the refusals are not the generator's mistakes.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from harness.hub import FakeHub
from harness.mlflow_app import (
    ACCESS,
    HOST,
    PREFIX,
    api,
    mlflow_fake_hub,
    mlflow_server,
    start_trace,
    user_model,
)

SECRET = "secret" + uuid.uuid4().hex[:12]  # in alice's data only; never in a request
NAMED = "named" + uuid.uuid4().hex[:8]  # in her objects' names, which requests do carry
ALIASES = {"run_id": "run_uuid", "run_uuid": "run_id", "trace_id": "request_id", "request_id": "trace_id"}
#: Routes MLflow serves without a protobuf request message: the parameters their views
#: read (``{}`` where they read none), filled like a message's fields.
HAND: dict[str, dict[str, Any]] = {
    "serve_artifacts": {"run_id": "run", "path": "secret.txt"},
    "serve_model_version_artifact": {"name": "model", "version": "1", "path": "secret.txt"},
    "serve_get_metric_history_bulk": {"run_id": ["run"], "metric_key": "loss"},
    "serve_get_metric_history_bulk_interval": {"run_ids": ["run"], "metric_key": "loss", "max_results": 10},
    "serve_search_datasets": {"experiment_ids": ["experiment"]},
    "serve_create_promptlab_run": {"experiment_id": "experiment", "run_name": "planted", "prompt_template": "x"},
    "serve_upload_artifact": {"run_uuid": "run", "path": "secret.txt"},
    "serve_get_trace_artifact": {"request_id": "trace"},
    "serve_get_logged_model_artifact": {"artifact_file_path": "secret.txt"},
    "_get_online_scoring_configs": {"experiment_id": "experiment", "scorer_ids": ["x"]},
    "_upsert_online_scoring_config": {"experiment_id": "experiment", "name": "x", "sample_rate": 1.0},
    "_invoke_scorer_handler": {"experiment_id": "experiment", "trace_ids": ["trace"], "serialized_scorer": "{}"},
    "_invoke_issue_detection_handler": {"experiment_id": "experiment", "trace_ids": ["trace"]},
    "_invoke_genai_evaluate_handler": {"experiment_id": "experiment", "trace_ids": ["trace"]},
    "_graphql": {},  # generated from the GraphQL schema below
    **{
        view: {}
        for view in (
            *("_generate_demo", "_delete_demo", "_cancel_job", "_get_job", "serve_gateway_proxy"),
            *("_not_implemented", "serve_get_ui_telemetry", "serve_post_ui_telemetry", "static", "serve"),
            *("serve_static_file", "health", "version", "_get_server_info", "_list_supported_providers"),
            *("_list_supported_models", "_get_provider_config", "_get_secrets_config"),
        )
    },
}
#: Views whose POST parameters are in the query and whose body is the file itself.
RAW_BODY = {"serve_upload_artifact", "UploadArtifact"}


@dataclass
class Objects:
    """alice's objects, as the requests name them."""

    experiment: str
    experiment_name: str
    shared: str
    run: str
    model: str  # registered model
    logged: str  # logged model id
    trace: str

    @property
    def artifact(self) -> str:
        return f"{self.experiment}/{self.run}/artifacts/secret.txt"


# --- the generator ------------------------------------------------------------------------


def field_value(name: str, objs: Objects) -> Any:
    """What a field of this name names: alice's object where it names one."""
    table: dict[str, Any] = {
        "run_id": objs.run,
        "run_uuid": objs.run,
        "source_run_id": objs.run,
        "run_ids": [objs.run],
        "experiment_id": objs.experiment,
        "experiment_ids": [objs.experiment],
        "experiment_name": objs.experiment_name,
        "name": objs.model,
        "new_name": f"/Users/bob/taken-{uuid.uuid4().hex[:6]}",
        "version": "1",
        "alias": "champion",
        "model_id": objs.logged,
        "model_ids": [objs.logged],
        "trace_id": objs.trace,
        "request_id": objs.trace,
        "trace_ids": [objs.trace],
        "request_ids": [objs.trace],
        "path": "secret.txt",
        "metric_key": "loss",
        "key": "planted",
        "value": "planted",
        "tag_key": "note",
        "source": f"runs:/{objs.run}/model",
        "status": "FAILED",
        "max_results": 100,
        "run_view_type": "ALL",
        "view_type": "ALL",
        "metrics": [{"key": "planted", "value": 1, "timestamp": 1, "step": 0}],
        "params": [{"key": "planted", "value": "1"}],
        "tags": [{"key": "planted", "value": "1"}],
        "locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": objs.experiment}}],
    }
    return table.get(name)


def message_params(descriptor: Any, objs: Objects, depth: int = 0) -> dict[str, Any]:
    """A request message's fields (snake_case) filled: alice's objects, else a plain value."""
    from google.protobuf.descriptor import FieldDescriptor as F

    params: dict[str, Any] = {}
    for field in descriptor.fields:
        repeated = field.is_repeated
        value = field_value(field.name, objs)
        if value is None:
            if field.type == F.TYPE_MESSAGE:
                if field.message_type.GetOptions().map_entry or depth >= 3:
                    continue
                value = message_params(field.message_type, objs, depth + 1)
            elif field.type == F.TYPE_ENUM:
                values = field.enum_type.values
                value = values[1 if len(values) > 1 else 0].name
            elif field.type == F.TYPE_BOOL:
                value = True
            elif field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
                value = 1.0
            elif field.type == F.TYPE_BYTES:
                continue
            elif field.type == F.TYPE_STRING:
                value = "planted"
            else:
                value = 1
            if repeated:
                value = [value]
        elif repeated and not isinstance(value, list):
            value = [value]
        elif not repeated and field.type != F.TYPE_MESSAGE:
            value = _one(value)
        params[field.name] = value
    return params


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def renamed(params: Any, rename: Any) -> Any:
    """``params`` with every key, at every depth, passed through ``rename``."""
    if isinstance(params, dict):
        return {rename(k): renamed(v, rename) for k, v in params.items()}
    if isinstance(params, list):
        return [renamed(v, rename) for v in params]
    return params


def flat(params: dict[str, Any]) -> dict[str, Any]:
    """What a query string can carry: scalars and lists of scalars (bools as MLflow spells them)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (str, int, float)) or (
            isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value)
        ):
            out[key] = value
    return out


@dataclass
class Request:
    route: str
    method: str
    spelling: str
    path: str
    query: dict[str, Any] | None = None
    body: Any = None  # JSON-able, or bytes for RAW_BODY views

    def send(self, client: httpx.Client, token: str) -> httpx.Response:
        headers = api(token)
        kwargs: dict[str, Any] = {"params": self.query, "headers": headers}
        if isinstance(self.body, bytes):
            kwargs["content"] = self.body
        elif self.body is not None:
            kwargs["content"] = json.dumps(self.body)
            headers["Content-Type"] = "application/json"
        return client.request(self.method, self.path, **kwargs)

    def carries(self, text: str) -> bool:
        return text in json.dumps([self.path, self.query, self.body if not isinstance(self.body, bytes) else ""])


def spellings(route: str, method: str, path: str, params: dict[str, Any], raw: bool) -> list[Request]:
    """Every way MLflow reads these parameters for this method (protobuf's JSON parsing takes
    a field's name and its JSON name, lowerCamelCase, at every depth)."""
    variants = {"snake": params, "camel": renamed(params, camel)}
    if any(k in ALIASES for k in params):
        variants["alias"] = {ALIASES.get(k, k): v for k, v in params.items()}
    out = []
    for name, values in variants.items():
        if method == "GET":
            out.append(Request(route, method, f"{name} query", path, query=flat(values)))
            if values:
                out.append(Request(route, method, f"{name} GET body", path, body=values))
        elif raw:
            out.append(
                Request(route, method, f"{name} query", path, query=flat(values), body=b"planted " + NAMED.encode())
            )
        else:
            out.append(Request(route, method, f"{name} body", path, body=values))
            out.append(Request(route, method, f"{name} query", path, query=flat(values), body={}))
    return out


def path_of(rule: str, objs: Objects) -> str:
    fill = {
        "request_id": objs.trace,
        "trace_id": objs.trace,
        "model_id": objs.logged,
        "artifact_path": objs.artifact,
        "tag_key": "note",
        "workspace_name": "default",
    }
    path = re.sub(r"<(?:[a-z]+:)?(\w+)>", lambda m: fill.get(m.group(1), "planted"), rule)
    return PREFIX + path.lstrip("/")


def graphql_requests(objs: Objects) -> list[Request]:
    """Each root field of MLflow's GraphQL schema, its input filled, selecting every scalar it can."""
    from graphql import GraphQLEnumType, GraphQLInputObjectType, GraphQLList, GraphQLNonNull, GraphQLObjectType
    from mlflow.server.graphql.graphql_schema_extensions import schema

    def bare(t: Any) -> Any:
        while isinstance(t, (GraphQLList, GraphQLNonNull)):
            t = t.of_type
        return t

    def selection(t: Any, depth: int = 0) -> str:
        t = bare(t)
        if not isinstance(t, GraphQLObjectType):
            return ""
        parts = []
        for name, f in t.fields.items():
            inner = bare(f.type)
            if isinstance(inner, GraphQLObjectType):
                if depth < 4 and (sub := selection(inner, depth + 1)):
                    parts.append(f"{name} {sub}")
            elif not f.args:
                parts.append(name)
        return "{ " + " ".join(parts) + " }" if parts else ""

    def snake(name: str) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()

    out = []
    for kind, root in (("query", schema.graphql_schema.query_type), ("mutation", schema.graphql_schema.mutation_type)):
        for name, f in (root.fields if root else {}).items():
            arg = f.args.get("input")
            if arg is None or not isinstance(bare(arg.type), GraphQLInputObjectType):
                continue
            given: dict[str, Any] = {}
            literal = []
            for field_name, input_field in bare(arg.type).fields.items():
                value = field_value(snake(field_name), objs)
                if value is None:
                    continue
                inner = input_field.type.of_type if isinstance(input_field.type, GraphQLNonNull) else input_field.type
                listed = isinstance(inner, GraphQLList)
                given[field_name] = (value if isinstance(value, list) else [value]) if listed else _one(value)
                enum = isinstance(bare(input_field.type), GraphQLEnumType)
                literal.append(f"{field_name}: {given[field_name] if enum else json.dumps(given[field_name])}")
            fields = selection(f.type)
            text = f"{kind} Q($input: {bare(arg.type).name}) {{ {name}(input: $input) {fields} }}"
            inline = f"{kind} {{ {name}(input: {{{', '.join(literal)}}}) {fields} }}"
            # MLflow reads GraphQL from the JSON body only, on GET as well (a query string is a 500 of its own).
            route, path = "graphql " + name, PREFIX + "graphql"
            out.append(Request(route, "POST", "variables", path, body={"query": text, "variables": {"input": given}}))
            out.append(Request(route, "POST", "inline", path, body={"query": inline}))
            out.append(Request(route, "GET", "GET body", path, body={"query": inline}))
    return out


def _one(value: Any) -> Any:
    return value[0] if isinstance(value, list) else value


def routes() -> list[tuple[str, str, str]]:
    """(rule, method, endpoint) of every route MLflow's app serves."""
    from mlflow.server import app

    return [
        (rule.rule, method, rule.endpoint)
        for rule in app.url_map.iter_rules()
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
    ]


def requests_for(objs: Objects) -> list[Request]:
    from mlflow.server import app, handlers

    messages = {view: message for message, view in handlers.HANDLERS.items()}
    out: list[Request] = []
    for rule, method, endpoint in routes():
        view = app.view_functions[endpoint]
        path = path_of(rule, objs)
        message = messages.get(view)
        if message is not None:
            params = message_params(message.DESCRIPTOR, objs)
            out += spellings(rule, method, path, params, message.__name__ in RAW_BODY and method == "PUT")
        elif endpoint == "_graphql":
            continue
        else:
            params = {k: _resolve(v, objs) for k, v in HAND[endpoint].items()}
            out += spellings(rule, method, path, params, endpoint in RAW_BODY)
    unique = {json.dumps([r.method, r.path, r.query, repr(r.body)]): r for r in out + graphql_requests(objs)}
    return list(unique.values())


def _resolve(value: Any, objs: Objects) -> Any:
    names = {"run": objs.run, "experiment": objs.experiment, "model": objs.model, "trace": objs.trace}
    if isinstance(value, list):
        return [names.get(v, v) if isinstance(v, str) else v for v in value]
    return names.get(value, value) if isinstance(value, str) else value


def test_every_route_mlflow_serves_is_generated_or_listed() -> None:
    """A route with neither a request message nor a HAND entry fails here (an MLflow upgrade)."""
    from mlflow.server import app, handlers

    messages = set(handlers.HANDLERS.values())
    unlisted = sorted(
        {(rule, endpoint) for rule, _m, endpoint in routes() if app.view_functions[endpoint] not in messages}
        - {(rule, endpoint) for rule, _m, endpoint in routes() if endpoint in HAND}
    )
    assert unlisted == [], f"routes hubforge has not examined: {unlisted}"
    stale = sorted(set(HAND) - {endpoint for _r, _m, endpoint in routes()})
    assert stale == [], f"HAND lists views MLflow no longer serves: {stale}"


# --- the server and alice's objects --------------------------------------------------------


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    hub = mlflow_fake_hub()
    hub.tokens.update(
        {
            "bob-token": user_model("bob"),
            "audrey-token": {
                "name": "audrey",
                "kind": "user",
                "scopes": ["read:users:name!user=audrey", ACCESS, "custom:audit:read"],
            },
        }
    )
    hub.groups.update({"alice": ["nlp", "vision"], "bob": ["nlp"], "carol": ["vision"], "mallory": ["nlp"]})
    hub.start()
    yield hub
    hub.shutdown()
    hub.server_close()


@pytest.fixture(scope="module")
def client(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with mlflow_server(tmp_path_factory.mktemp("routes"), hub) as url:
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
        with httpx.Client(base_url=url, headers={"Host": HOST}, timeout=60, limits=limits) as c:
            yield c


def ok(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, (resp.request.url, resp.text[:500])
    return dict(resp.json()) if resp.content else {}


@pytest.fixture(scope="module")
def objs(client: httpx.Client) -> Objects:
    """alice's objects, none of them shared; and one experiment shared with ``vision``."""
    alice = api("alice-token")
    mlflow = PREFIX + "api/2.0/mlflow"

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        return ok(client.post(f"{mlflow}/{path}", json=body, headers=alice))

    name = f"/Users/alice/{NAMED}"
    experiment = post("experiments/create", {"name": name, "tags": [{"key": "note", "value": SECRET}]})
    experiment_id = experiment["experiment_id"]
    shared = post("experiments/create", {"name": f"/Users/alice/shared-{NAMED}"})["experiment_id"]
    post("experiments/set-experiment-tag", {"experiment_id": shared, "key": "hubforge.shared_with", "value": "vision"})
    run = post("runs/create", {"experiment_id": experiment_id, "run_name": f"run-{SECRET}"})["run"]["info"]["run_id"]
    post(
        "runs/log-batch",
        {
            "run_id": run,
            "metrics": [{"key": "loss", "value": 0.25, "timestamp": 1, "step": 0}],
            "params": [{"key": "C", "value": SECRET}],
            "tags": [{"key": "note", "value": SECRET}],
        },
    )
    upload = client.put(
        f"{PREFIX}api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run}/artifacts/secret.txt",
        content=SECRET.encode(),
        headers=alice,
    )
    ok(upload)
    logged = post(
        "logged-models",
        {"experiment_id": experiment_id, "name": "clf", "tags": [{"key": "note", "value": SECRET}]},
    )["model"]["info"]["model_id"]
    model = f"model-{NAMED}"
    post("registered-models/create", {"name": model, "description": SECRET})
    post("model-versions/create", {"name": model, "source": f"runs:/{run}/model", "run_id": run, "description": SECRET})
    trace = start_trace(client, "alice-token", experiment_id, tags={"note": SECRET})
    return Objects(experiment_id, name, shared, run, model, logged, trace)


def snapshot(client: httpx.Client, objs: Objects) -> dict[str, Any]:
    """Everything of alice's, as alice reads it."""
    alice = api("alice-token")
    v2, v3 = PREFIX + "api/2.0/mlflow", PREFIX + "api/3.0/mlflow"

    def get(url: str, **params: Any) -> Any:
        return ok(client.get(url, params=params, headers=alice))

    def post(path: str, body: dict[str, Any]) -> Any:
        return ok(client.post(path, json=body, headers=alice))

    runs = post(f"{v2}/runs/search", {"experiment_ids": [objs.experiment, objs.shared], "run_view_type": "ALL"})
    mine = post(f"{v2}/experiments/search", {"max_results": 1000, "view_type": "ALL"})
    return {
        "experiments": [get(f"{v2}/experiments/get", experiment_id=e) for e in (objs.experiment, objs.shared)],
        "all experiments": sorted(e["name"] for e in mine.get("experiments", [])),
        "runs": sorted(runs.get("runs", []), key=lambda r: r["info"]["run_id"]),
        "history": get(f"{v2}/metrics/get-history", run_id=objs.run, metric_key="loss"),
        "artifacts": get(f"{PREFIX}api/2.0/mlflow-artifacts/artifacts", path=f"{objs.experiment}/{objs.run}/artifacts"),
        "file": client.get(f"{PREFIX}api/2.0/mlflow-artifacts/artifacts/{objs.artifact}", headers=alice).text,
        "model": get(f"{v2}/registered-models/get", name=objs.model),
        "versions": get(f"{v2}/model-versions/search", filter=f"name='{objs.model}'"),
        "logged": get(f"{v2}/logged-models/{objs.logged}"),
        "logged in experiment": post(f"{v2}/logged-models/search", {"experiment_ids": [objs.experiment]}),
        "trace": get(f"{v3}/traces/{objs.trace}"),
        "traces": post(f"{v3}/traces/search", {"locations": field_value("locations", objs)}),
    }


def sweep(client: httpx.Client, token: str, requests: list[Request]) -> list[tuple[Request, httpx.Response]]:
    def one(request: Request) -> tuple[Request, httpx.Response]:
        return request, request.send(client, token)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, requests))


def test_the_generated_requests_reach_the_owners_data(client: httpx.Client, objs: Objects) -> None:
    """As alice, the reading routes the generator spells find her data: a refusal to others
    below is the permission check's, not a malformed request."""
    reads = [
        r
        for r in requests_for(objs)
        if (r.method == "GET" or r.route.startswith("graphql mlflowGet")) and "GET body" not in r.spelling
    ]
    seen = {
        r.route for r, resp in sweep(client, "alice-token", reads) if resp.status_code == 200 and SECRET in resp.text
    }
    expected = {
        "/api/2.0/mlflow/runs/get",
        "/ajax-api/2.0/mlflow/runs/get",
        "/api/2.0/mlflow/experiments/get",
        "/api/2.0/mlflow/experiments/get-by-name",
        "/api/2.0/mlflow/registered-models/get",
        "/api/2.0/mlflow/model-versions/get",
        "/api/2.0/mlflow/logged-models/<model_id>",
        "/api/3.0/mlflow/traces/<trace_id>",
        "/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>",
        "/get-artifact",
        "graphql mlflowGetRun",
    }
    assert expected <= seen, f"the generator does not reach alice's data through {sorted(expected - seen)}"


@pytest.mark.parametrize("who", ["bob", "carol", "mallory", "audrey"])
def test_no_spelling_of_any_route_leaks_or_changes_anothers_objects(
    client: httpx.Client, objs: Objects, who: str
) -> None:
    before = snapshot(client, objs)
    requests = requests_for(objs)
    answers = sweep(client, f"{who}-token", requests)
    assert len(answers) > 1000, "every route in every spelling"
    if who != "audrey":  # an auditor reads everything
        leaks = [
            f"{r.method} {r.path} ({r.spelling}) -> {resp.status_code}"
            for r, resp in answers
            if SECRET in resp.text and not r.carries(SECRET)
        ]
        assert leaks == [], f"{who} read alice's data: {leaks[:20]}"
        # Refused before MLflow's handlers run: none of their own 5xx for malformed input.
        errors = [
            f"{r.method} {r.path} ({r.spelling}) -> {resp.status_code}"
            for r, resp in answers
            if resp.status_code >= 500
        ]
        assert errors == [], errors[:20]
    after = snapshot(client, objs)
    changed = sorted(key for key in before if before[key] != after[key])
    assert changed == [], (
        f"{who} changed alice's {changed}",
        {k: (before[k], after[k]) for k in changed},
    )
