"""The hub-managed services: declared once, rendered alike for one machine and Kubernetes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from traitlets.config import Config

from hubforge.catalog import load_catalog
from hubforge.config import PlatformConfig, load_config
from hubforge.contract import CONFIG_ENV, DATA_ENV, ISOLATION_ENV, SCHEDULER_RUN_SERVICES_ENV, SERVING_URL_ENV
from hubforge.hub import services
from hubforge.hub.compat import service_timeouts
from hubforge.hub.hubconfig import Runtime, configure, one_machine
from hubforge.hub.services import SERVICES, Placement, ServiceSpec, hub_service
from hubforge.personas import hub_roles
from hubforge.spawner_profiles.kubernetes.render import helm_values, kubernetes

#: Ports no other number in a rendering shares, so that they can be told apart.
LOCAL_PORTS = {
    "governance": 41003, "mlflow": 41004, "serving": 41005, "features": 41006, "apps": 41007, "scheduler": 41008
}  # fmt: skip


def runtime() -> Runtime:
    return Runtime(
        hub_port=41001, proxy_api_port=41002, service_ports=LOCAL_PORTS, proxy_command="/opt/chp", instance="/data"
    )


def config(tmp_path: Path, extra: dict[str, Any] | None = None) -> PlatformConfig:
    path = tmp_path / "platform.yaml"
    data = {"data_dir": str(tmp_path / "data"), "hub": {"public_url": "https://ml.example.com/"}, **(extra or {})}
    path.write_text(yaml.safe_dump(data))
    return load_config(path, environ={})


def facts(placement: Placement, spec: ServiceSpec) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """What the placement decides, each with the name it stands for: whole values (an
    interpreter, an address, a port) and parts of values (a folder, a URL), longest first."""
    port = placement.ports[spec.name]
    whole = {
        placement.script("mlflow"): "{mlflow}",
        placement.python: "{python}",
        placement.bind_ip: "{bind}",
        str(port): "{port}",
        ",".join(placement.hosts(port)): "{hosts}",
    }
    parts = [(str(placement.cfg.data_dir), "{data}"), (f"http://{placement.url_host}:{port}", "{url}")]
    # A service may name another where it is reached (governance reads MLflow).
    parts += [(f"http://{placement.url_host}:{p}", f"{{url:{name}}}") for name, p in placement.ports.items()]
    return whole, sorted(parts, key=lambda pair: -len(pair[0]))


def generic(value: Any, facts: tuple[dict[str, str], list[tuple[str, str]]]) -> Any:
    """``value`` with each placement fact replaced by its name."""
    whole, parts = facts
    if isinstance(value, dict):
        return {key: generic(item, facts) for key, item in value.items()}
    if isinstance(value, list):
        return [generic(item, facts) for item in value]
    if isinstance(value, str):
        if value in whole:
            return whole[value]
        for fact, name in parts:
            value = value.replace(fact, name)
    return value


@pytest.mark.parametrize("spec", [s for s in SERVICES if s.on_kubernetes], ids=lambda spec: spec.name)
def test_each_service_renders_alike_field_by_field(tmp_path: Path, spec: ServiceSpec) -> None:
    """Every field of a service's rendering is the same on one machine and on Kubernetes, but
    for the facts of where it runs (address, host, interpreter, data folder, port); the
    environment every service shares is the placement's, and carries the same contract."""
    cfg = config(tmp_path)
    local, kube = one_machine(cfg, runtime()), kubernetes(cfg)
    ours, theirs = hub_service(spec, local), hub_service(spec, kube)
    assert (
        set(ours)
        == set(theirs)
        == {
            "name",
            "url",
            "command",
            "environment",
            "oauth_no_confirm",
            "oauth_client_allowed_scopes",
        }
    )
    shared_local = {k: v for k, v in ours["environment"].items() if k in local.env}
    shared_kube = {k: v for k, v in theirs["environment"].items() if k in kube.env}
    # Only one machine runs the serving router (KServe on Kubernetes): governance drives it there.
    own_local = {k: v for k, v in ours["environment"].items() if k not in local.env and k != SERVING_URL_ENV}
    own_kube = {k: v for k, v in theirs["environment"].items() if k not in kube.env}
    # A scheduled run reaches the services as people's servers do: through the proxy on one
    # machine, on the hub's Service (each on its port) on Kubernetes, there only those running.
    run_local = json.loads(own_local.pop(SCHEDULER_RUN_SERVICES_ENV, "{}"))
    run_kube = json.loads(own_kube.pop(SCHEDULER_RUN_SERVICES_ENV, "{}"))
    assert set(run_kube) <= set(run_local)
    for variable, url in run_kube.items():
        name = run_local[variable].split("/services/")[1].split("/")[0]
        assert url == run_local[variable].replace(cfg.local_url, f"http://hub:{kube.ports[name]}/"), variable
    # On one machine each runs under the supervisor; a pod ends whole.
    supervisor = [local.python, "-m", "hubforge.hub.supervised", "--port", str(local.ports[spec.name]), "--"]
    assert ours["command"][: len(supervisor)] == supervisor
    ours = {**ours, "command": ours["command"][len(supervisor) :]}
    for field in sorted(ours):
        if field == "environment":
            assert generic(own_local, facts(local, spec)) == generic(own_kube, facts(kube, spec)), field
        elif field not in ("url", "command"):
            assert ours[field] == theirs[field], field
        else:
            assert generic(ours[field], facts(local, spec)) == generic(theirs[field], facts(kube, spec)), field
    for shared in (shared_local, shared_kube):
        assert {DATA_ENV, ISOLATION_ENV, "PYTHONUNBUFFERED"} <= set(shared)
    assert shared_kube[CONFIG_ENV] == "/etc/hubforge/platform.yaml"
    assert shared_kube[ISOLATION_ENV] == "pods", "on Kubernetes each person's server is a pod of its own"


def test_the_hub_gets_every_enabled_service_as_rendered(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    c = Config()
    configure(c, cfg, runtime())
    rendered = services.hub_services(one_machine(cfg, runtime()))
    # As rendered, and with its start timeout where this JupyterHub knows the field.
    timeout = {"timeout": services.SERVICE_START_TIMEOUT} if service_timeouts() else {}
    assert c.JupyterHub.services == [{**timeout, **entry} for entry in rendered]
    assert [s["name"] for s in c.JupyterHub.services] == [
        "governance",
        "mlflow",
        "serving",
        "features",
        "apps",
        "scheduler",
    ]
    role = next(r for r in c.JupyterHub.load_roles if r["name"] == services.SERVICE_ROLE)
    assert role["services"] == ["governance", "mlflow", "serving", "features", "apps", "scheduler"]
    values = helm_values(cfg, load_catalog(cfg))
    rendered = {name: {"name": name, **entry} for name, entry in values["hub"]["services"].items()}
    assert rendered == {s["name"]: s for s in services.hub_services(kubernetes(cfg))}
    ports = {p["name"]: p["port"] for p in values["hub"]["service"]["extraPorts"]}
    # serving is KServe's on Kubernetes
    assert ports == {"governance": 10101, "mlflow": 10102, "apps": 10105, "scheduler": 10106}


def test_a_disabled_service_is_nowhere(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"services": {"mlflow": {"enabled": False}, "governance": {"port": 9911}}})
    c = Config()
    configure(c, cfg, runtime())
    assert [s["name"] for s in c.JupyterHub.services] == ["governance", "serving", "features", "apps", "scheduler"]
    role = next(r for r in c.JupyterHub.load_roles if r["name"] == services.SERVICE_ROLE)
    assert role["services"] == ["governance", "serving", "features", "apps", "scheduler"], "the hub's own services"
    values = helm_values(cfg, load_catalog(cfg))
    # serving is KServe's on Kubernetes
    assert set(values["hub"]["services"]) == {"governance", "apps", "scheduler"}
    assert values["hub"]["services"]["governance"]["url"] == "http://hub:9911"
    assert [p["port"] for p in values["hub"]["service"]["extraPorts"]] == [9911, 10105, 10106]
    env = values["singleuser"]["extraEnv"]
    assert "HUBFORGE_MLFLOW_URL" not in env, "no MLflow: kernels are not told of one"
    assert env["HUBFORGE_AUDIT_URL"] == "http://hub:9911/services/governance/api/audit/events"
    assert c.Spawner.environment["HUBFORGE_AUDIT_URL"].endswith("/services/governance/api/audit/events")
    assert "access:services!service=governance" in c.Spawner.server_token_scopes
    assert "access:services!service=mlflow" not in c.Spawner.server_token_scopes


def test_every_persona_may_use_every_service_that_says_so() -> None:
    for role in hub_roles({}, services.persona_services()):
        for spec in SERVICES:
            assert (f"access:services!service={spec.name}" in role["scopes"]) is spec.persona_access


def test_the_mlflow_database_url_is_never_on_a_command_line(tmp_path: Path) -> None:
    """Any account can read a process's arguments, and anyone who can read a pod its command."""
    cfg = config(tmp_path, {"backends": {"mlflow_db_url": "postgresql://mlflow:s3cret@db/mlflow"}})
    for placement in (one_machine(cfg, runtime()), kubernetes(cfg)):
        entry = hub_service(services.MLFLOW, placement)
        assert not any("s3cret" in part for part in entry["command"])
        assert entry["environment"]["MLFLOW_BACKEND_STORE_URI"] == "postgresql+psycopg2://mlflow:s3cret@db/mlflow"


def test_the_features_service_is_off_where_its_feast_environment_is_missing(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"services": {"features": {"environment": str(tmp_path / "no-feast")}}})
    assert services.FEATURES.configured(cfg) and not services.FEATURES.enabled(cfg)
    assert services.FEATURES.unavailable(cfg) == (
        f"no Feast environment at {tmp_path / 'no-feast'} (`make install` builds it; services.features.environment)"
    )
    assert "features" not in [spec.name for spec in services.enabled_services(cfg)]
    (tmp_path / "no-feast" / "bin").mkdir(parents=True)
    (tmp_path / "no-feast" / "bin" / "python").symlink_to(sys.executable)
    assert services.FEATURES.enabled(cfg)


def test_the_features_service_checks_grants_with_governance_as_itself(tmp_path: Path) -> None:
    c = Config()
    configure(c, config(tmp_path), runtime())
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles[services.FEATURES_ROLE] == {
        "name": "hubforge-features",
        "scopes": ["access:services!service=governance", "custom:grants:read"],
        "services": ["features"],
    }
    assert services.features_role(["features"])["scopes"] == [], "no governance to ask, nothing to hold"
    # without its Feast environment the features service does not run, and gets no role
    c = Config()
    configure(c, config(tmp_path, {"services": {"features": {"environment": str(tmp_path / "no-feast")}}}), runtime())
    assert services.FEATURES_ROLE not in {r["name"] for r in c.JupyterHub.load_roles}
