"""``hubforge k8s render``: every file parses, every object validates, the pieces fit together.

Built-in kinds are validated with kubernetes-validate; Kueue objects against
the Kueue CRD schemas vendored under ``tests/data/kueue`` (see its README).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from oauthenticator.generic import GenericOAuthenticator
from traitlets.config import Config

from harness.config import kubernetes_platform
from hubforge.catalog import load_catalog
from hubforge.cli import main
from hubforge.config import default_config_text, load_config
from hubforge.errors import ConfigError
from hubforge.personas import CUSTOM_SCOPES
from hubforge.spawner_profiles.kubernetes.render import HUB_DATA_DIR, render_k8s
from hubforge.spawner_profiles.kubernetes.spawner import QUEUE_LABEL, HubforgeKubeSpawner, TierProfileList, render_pod

K8S_VERSION = "1.35.0"
KUEUE = Path(__file__).resolve().parents[1] / "data" / "kueue"
KUEUE_KINDS = {
    "ClusterQueue": "clusterqueues",
    "Cohort": "cohorts",
    "LocalQueue": "localqueues",
    "ResourceFlavor": "resourceflavors",
}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """File name -> its YAML documents, for the shipped tiers with OAuth."""
    tmp = tmp_path_factory.mktemp("k8s")
    files = render_k8s(load_config(kubernetes_platform(tmp), environ={}), tmp / "out")
    return {path.name: list(yaml.safe_load_all(path.read_text())) for path in files}


def objects(rendered: dict[str, list[dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [doc for docs in rendered.values() for doc in docs if doc.get("kind") == kind]


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
def kueue_validator(kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((KUEUE / f"{KUEUE_KINDS[kind]}.v1beta2.json").read_text())
    schema.pop("$comment")
    return jsonschema.Draft7Validator(_closed(schema))


def validate_kueue(obj: dict[str, Any]) -> None:
    assert obj["apiVersion"] == "kueue.x-k8s.io/v1beta2"
    errors = sorted(kueue_validator(obj["kind"]).iter_errors(obj), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    meta = obj["metadata"]
    assert DNS_SUBDOMAIN.match(meta["name"]) and len(meta["name"]) <= 253
    assert all(isinstance(v, str) for v in meta.get("labels", {}).values())
    _check_cel_rules(obj)


def _check_cel_rules(obj: dict[str, Any]) -> None:
    """The CRDs' x-kubernetes-validations (CEL) that jsonschema cannot run, for what we write."""
    spec = obj["spec"]
    if obj["kind"] in ("ClusterQueue", "Cohort"):
        for group in spec.get("resourceGroups", []):
            assert all(len(f["resources"]) == len(group["coveredResources"]) for f in group["flavors"])
            # Each flavor lists the covered resources in the same order.
            assert all([r["name"] for r in f["resources"]] == group["coveredResources"] for f in group["flavors"])
    if obj["kind"] == "ClusterQueue":
        preemption = spec.get("preemption", {})
        assert not (
            preemption.get("reclaimWithinCohort", "Never") == "Never"
            and preemption.get("borrowWithinCohort", {}).get("policy", "Never") != "Never"
        )
        if not spec.get("cohortName"):
            limits = [r for g in spec["resourceGroups"] for f in g["flavors"] for r in f["resources"]]
            assert not any("borrowingLimit" in r for r in limits), "borrowingLimit must be nil when cohort is empty"
    if obj["kind"] == "ResourceFlavor":
        assert len(spec.get("nodeLabels", {})) <= 8


# --- the rendered files -----------------------------------------------------------------------


def test_render_writes_the_expected_files(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert set(rendered) == {
        "helm-values.yaml",
        "hubforge-platform.yaml",
        "priority-classes.yaml",
        "kueue-values.yaml",
        "kueue.yaml",
    }


def test_every_object_validates(rendered: dict[str, list[dict[str, Any]]]) -> None:
    seen = []
    for name, docs in rendered.items():
        if name in ("helm-values.yaml", "kueue-values.yaml"):
            continue
        for doc in docs:
            if doc["kind"] in KUEUE_KINDS:
                validate_kueue(doc)
            else:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            seen.append(doc["kind"])
    kinds = [
        "ClusterQueue",
        "Cohort",
        "LocalQueue",
        "Namespace",
        "PersistentVolumeClaim",
        "PriorityClass",
        "ResourceFlavor",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
    ]
    assert sorted(set(seen)) == kinds


def test_the_kueue_validation_catches_mistakes() -> None:
    # The vendored schema and the closed-world check are not vacuous.
    good = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "LocalQueue",
        "metadata": {"name": "training", "namespace": "hubforge"},
        "spec": {"clusterQueue": "hubforge-training"},
    }
    validate_kueue(good)
    for broken in ({"clusterQueue": "Hubforge_Training"}, {"clusterQueue": "x", "cohort": "y"}):
        bad = {**good, "spec": broken}
        with pytest.raises(AssertionError):
            validate_kueue(bad)
    cq = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ClusterQueue",
        "metadata": {"name": "q"},
        "spec": {"fairSharing": {"weight": "heavy"}, "resourceGroups": []},
    }
    with pytest.raises(AssertionError, match="weight"):
        validate_kueue(cq)


def test_kueue_objects_fit_together(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """A Cohort per queued tier holds its capacity, in the platform's cohort, with its weight;
    in it, a ClusterQueue per group with a quota (borrowing at most that many GPUs) and one for
    everybody else, each named by a LocalQueue in the user namespace."""
    catalog = load_catalog(load_config(environ={}))
    queued = [t for t in catalog if t.queue]
    flavors = {f["metadata"]["name"]: f for f in objects(rendered, "ResourceFlavor")}
    cohorts = {c["metadata"]["name"]: c["spec"] for c in objects(rendered, "Cohort")}
    cluster_queues = {q["metadata"]["name"]: q["spec"] for q in objects(rendered, "ClusterQueue")}
    local_queues = {q["metadata"]["name"]: q for q in objects(rendered, "LocalQueue")}
    # One flavor per GPU model, labelled as GPU feature discovery labels the nodes.
    assert set(flavors) == {"nvidia-a100-80gb", "nvidia-h100-80gb", "nvidia-a100-40gb"}
    assert flavors["nvidia-h100-80gb"]["spec"]["nodeLabels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert cohorts.pop("hubforge") == {}, "the platform's cohort, the tiers' parent"
    assert set(cohorts) == {f"hubforge-{t.slug}" for t in queued}
    expected_queues = set()
    for tier in queued:
        cohort = cohorts[f"hubforge-{tier.slug}"]
        assert cohort["parentName"] == "hubforge"
        assert float(cohort["fairSharing"]["weight"]) == tier.fair_share_weight
        (group,) = cohort["resourceGroups"]
        assert group["coveredResources"] == ["cpu", "memory", "nvidia.com/gpu"]
        (flavor,) = group["flavors"]
        assert flavor["name"] == tier.resources.model and flavor["name"] in flavors
        quota = {r["name"]: r["nominalQuota"] for r in flavor["resources"]}
        assert tier.capacity is not None and tier.quota, "the shipped queued tiers have group quotas"
        assert quota["nvidia.com/gpu"] == tier.capacity.gpus
        assert quota["memory"] == tier.capacity.memory + "i"
        for grp in (*tier.quota, None):
            name = f"hubforge-{tier.slug}" + (f"-{grp}" if grp else "")
            cq = cluster_queues[name]
            assert cq["cohortName"] == f"hubforge-{tier.slug}"
            assert cq["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "hubforge"}}
            assert cq["preemption"] == {"reclaimWithinCohort": "Never", "withinClusterQueue": "Never"}
            (resources,) = [f["resources"] for g in cq["resourceGroups"] for f in g["flavors"]]
            assert all(r["nominalQuota"] == 0 for r in resources), "the quota is the tier cohort's"
            limits = {r["name"]: r.get("borrowingLimit") for r in resources}
            assert limits == {"cpu": None, "memory": None, "nvidia.com/gpu": tier.quota[grp] if grp else None}
            lq = local_queues[tier.queue + (f"-{grp}" if grp else "")]
            assert lq["metadata"]["namespace"] == "hubforge"
            assert lq["spec"]["clusterQueue"] == name
            expected_queues.add(name)
    assert set(cluster_queues) == expected_queues
    weights = {name: c["fairSharing"]["weight"] for name, c in cohorts.items()}
    assert weights == {"hubforge-training": 2, "hubforge-hpo": 1, "hubforge-finetune": "0.5"}


def test_kueue_values_turn_fair_sharing_and_the_pod_integration_on(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The manager configuration for Kueue's chart: the chart's own, with fair sharing (v1beta2:
    present means on) and the pod integration; every key one Kueue's Configuration has."""
    (values,) = rendered["kueue-values.yaml"]
    assert set(values) == {"managerConfig"}
    config = yaml.safe_load(values["managerConfig"]["controllerManagerConfigYaml"])
    assert (config["apiVersion"], config["kind"]) == ("config.kueue.x-k8s.io/v1beta2", "Configuration")
    assert config["fairSharing"] == {"preemptionStrategies": ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]}
    assert "pod" in config["integrations"]["frameworks"]
    shipped = yaml.safe_load((KUEUE_VENDOR / "manager-config.yaml").read_text())
    assert {k: v for k, v in config.items() if k not in ("fairSharing", "integrations")} == {
        k: v for k, v in shipped.items() if k != "integrations"
    }, "the rest as the chart ships it"
    assert set(config) <= KUEUE_CONFIGURATION_FIELDS


#: The JSON fields of Kueue v0.19.2's ``Configuration`` (apis/config/v1beta2/configuration_types.go).
KUEUE_CONFIGURATION_FIELDS = {
    "apiVersion", "kind", "namespace", "health", "metrics", "webhook", "leaderElection", "controller",
    "clientConnection", "pprofBindAddress", "manageJobsWithoutQueueName", "managedJobsNamespaceSelector",
    "internalCertManagement", "waitForPodsReady", "integrations", "multiKueue", "fairSharing",
    "admissionFairSharing", "resources", "featureGates", "objectRetentionPolicies",
}  # fmt: skip
KUEUE_VENDOR = Path(__file__).resolve().parents[2] / "spawner_profiles" / "kubernetes" / "vendor" / "kueue"


def test_a_group_name_that_is_no_dns_label_still_names_its_own_queues(tmp_path: Path) -> None:
    """Kueue's names come from hub groups: any group name platform.yaml allows gives valid names
    (``_`` is not allowed in them), and two never collide."""
    raw = yaml.safe_load(default_config_text())
    training = copy.deepcopy(raw["tiers"]["training"])
    training["quota"] = {"data-scientist": 2, "ml_team": 4, "ml-team-b": 4, "ml.team": 1}
    users = {**raw["users"], "mia": {"groups": ["ml_team", "ml-team-b", "ml.team"]}}
    path = kubernetes_platform(tmp_path, {"tiers": {**raw["tiers"], "training": training}, "users": users})
    cfg = load_config(path, environ={})
    render_k8s(cfg, tmp_path / "out")
    docs = list(yaml.safe_load_all((tmp_path / "out" / "kueue.yaml").read_text()))
    for doc in docs:
        validate_kueue(doc)
    names = [d["metadata"]["name"] for d in docs if d["kind"] == "ClusterQueue" and "training" in d["metadata"]["name"]]
    assert len(names) == len(set(names)) == 5
    assert "hubforge-training-data-scientist" in names, "a name that is a DNS label stays as it is"


def test_a_queued_pod_names_a_rendered_local_queue(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = render_pod(load_config(environ={}), "bob", "finetune", {})
    local_queues = {q["metadata"]["name"] for q in objects(rendered, "LocalQueue")}
    # bob is an ML engineer: his pod counts against the ML engineers' quota on the tier.
    assert pod["metadata"]["labels"][QUEUE_LABEL] == "finetune-ml-engineer"
    assert pod["metadata"]["labels"][QUEUE_LABEL] in local_queues
    classes = {c["metadata"]["name"] for c in objects(rendered, "PriorityClass")}
    assert pod["spec"]["priorityClassName"] in classes


def test_priority_classes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    classes = {c["metadata"]["name"]: c for c in objects(rendered, "PriorityClass")}
    assert set(classes) == {"hubforge-interactive", "hubforge-batch"}
    assert classes["hubforge-interactive"]["value"] > classes["hubforge-batch"]["value"]
    assert classes["hubforge-batch"]["preemptionPolicy"] == "Never"


def test_the_secret_carries_the_platform_config(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (secret,) = objects(rendered, "Secret")
    namespace = objects(rendered, "Namespace")[0]
    assert namespace["metadata"]["name"] == secret["metadata"]["namespace"] == "hubforge"
    path = tmp_path / "platform.yaml"
    path.write_text(secret["stringData"]["platform.yaml"])
    cfg = load_config(path, environ={})
    assert str(cfg.data_dir) == str(HUB_DATA_DIR)
    assert list(cfg.data["tiers"]) == ["interactive", "training", "hpo", "finetune", "apps"]


def test_helm_values(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (values,) = rendered["helm-values.yaml"]
    slugs = [p["slug"] for p in values["singleuser"]["profileList"]]
    assert slugs == ["interactive", "training", "hpo", "finetune", "apps"]
    hub = values["hub"]
    assert set(hub["services"]) == {"governance", "mlflow", "apps", "scheduler"}  # serving is KServe's on Kubernetes
    assert hub["services"]["governance"]["url"] == "http://hub:10101"
    assert hub["services"]["governance"]["command"] == ["python3", "-m", "hubforge.hub.governance"]
    mlflow = hub["services"]["mlflow"]["command"]
    assert (
        hub["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
        == f"sqlite:///{HUB_DATA_DIR}/mlflow.sqlite"
    )
    assert hub["services"]["mlflow"]["oauth_client_allowed_scopes"] == sorted(CUSTOM_SCOPES)
    assert mlflow[mlflow.index("--static-prefix") + 1] == "/services/mlflow"
    assert {p["port"] for p in hub["service"]["extraPorts"]} == {10101, 10102, 10105, 10106}
    assert hub["extraVolumeMounts"][0]["mountPath"] == "/etc/hubforge"
    assert hub["extraVolumes"][0]["secret"]["secretName"] == "hubforge-platform"
    assert hub["extraEnv"]["HUBFORGE_CONFIG"] == "/etc/hubforge/platform.yaml"
    # User pods reach MLflow on the hub's Service, a port the hub's NetworkPolicy opens to them.
    mlflow_url = values["singleuser"]["extraEnv"]["HUBFORGE_MLFLOW_URL"]
    assert mlflow_url == "http://hub:10102/services/mlflow"
    allowed = mlflow[mlflow.index("--allowed-hosts") + 1].split(",")
    assert "hub:10102" in allowed
    (rule,) = hub["networkPolicy"]["ingress"]
    assert {"port": 10102, "protocol": "TCP"} in rule["ports"]


def test_the_services_believe_forwarded_addresses_from_the_proxy_pods_only(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    (values,) = rendered["helm-values.yaml"]
    for name in ("governance", "mlflow"):
        assert values["hub"]["services"][name]["environment"]["HUBFORGE_PROXY_PEERS"] == "hubforge-proxy"
    (service,) = [doc for doc in rendered["hubforge-platform.yaml"] if doc["kind"] == "Service"]
    assert service["metadata"]["name"] == "hubforge-proxy"
    assert service["spec"]["clusterIP"] == "None", "headless: its DNS answer is the pods' own addresses"
    # The labels z2jh gives the proxy pods (its proxy/deployment.yaml), and nobody else's.
    assert service["spec"]["selector"] == {"app": "jupyterhub", "component": "proxy"}


def test_extra_config_configures_the_hub(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (values,) = rendered["helm-values.yaml"]
    (secret,) = objects(rendered, "Secret")
    (tmp_path / "platform.yaml").write_text(secret["stringData"]["platform.yaml"])
    monkeypatch.setenv("HUBFORGE_CONFIG", str(tmp_path / "platform.yaml"))
    monkeypatch.setenv("HUBFORGE_DATA", str(tmp_path / "data"))
    c = Config()
    c.KubeSpawner.profile_list = values["singleuser"]["profileList"]  # what z2jh sets before extraConfig
    c.JupyterHub.services = [{"name": name, **entry} for name, entry in values["hub"]["services"].items()]
    exec(compile(values["hub"]["extraConfig"]["hubforge"], "extraConfig", "exec"), {"c": c})
    assert c.JupyterHub.spawner_class is HubforgeKubeSpawner
    assert isinstance(c.HubforgeKubeSpawner.profile_list, TierProfileList)
    assert issubclass(c.JupyterHub.authenticator_class, GenericOAuthenticator)
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert {"data-scientist", "ml-lead", "hubforge-services"} <= set(roles)
    assert roles["hubforge-services"]["services"] == ["governance", "mlflow", "apps", "scheduler"]
    # Analysts land on the apps gallery, as on one machine.
    frank = SimpleNamespace(current_user=SimpleNamespace(groups=[SimpleNamespace(name="analyst")]))
    assert c.JupyterHub.default_url(frank) == "/services/apps/"
    assert roles["hubforge-governance"]["scopes"] == ["access:services!service=mlflow", "custom:audit:read"]
    assert "hubforge-features" not in roles, "the features service does not run on Kubernetes yet"
    assert "custom:experiments:write" in c.Spawner.server_token_scopes
    # The features service does not run on Kubernetes yet: no token may name it.
    assert "access:services!service=features" not in c.Spawner.server_token_scopes


def test_mlflow_disabled_and_settings(tmp_path: Path) -> None:
    path = kubernetes_platform(tmp_path, {"services": {"mlflow": {"enabled": False}, "governance": {"port": 9911}}})
    files = render_k8s(load_config(path, environ={}), tmp_path / "out")
    values = yaml.safe_load(files[0].read_text())
    assert set(values["hub"]["services"]) == {"governance", "apps", "scheduler"}
    assert values["hub"]["services"]["governance"]["url"] == "http://hub:9911"
    assert "HUBFORGE_MLFLOW_URL" not in values["singleuser"].get("extraEnv", {})


def test_the_hub_may_deploy_inference_services_in_the_model_namespaces_only(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    namespaces = [n["metadata"]["name"] for n in objects(rendered, "Namespace")]
    assert namespaces == ["hubforge", "hubforge-models", "hubforge-models-staging"]
    roles = {
        r["metadata"]["namespace"]: r for r in objects(rendered, "Role") if r["metadata"]["name"] == "hubforge-deploy"
    }
    bindings = {
        b["metadata"]["namespace"]: b
        for b in objects(rendered, "RoleBinding")
        if b["metadata"]["name"] == "hubforge-deploy"
    }
    assert set(roles) == set(bindings) == {"hubforge-models", "hubforge-models-staging"}
    for namespace, role in roles.items():
        (rule,) = role["rules"]
        assert rule == {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "verbs": ["get", "create", "patch"],
        }
        binding = bindings[namespace]
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "hubforge"}]


def test_the_scheduler_may_run_jobs_in_the_user_namespace_and_nothing_more(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    (role,) = [r for r in objects(rendered, "Role") if r["metadata"]["name"] == "hubforge-scheduler"]
    (binding,) = [b for b in objects(rendered, "RoleBinding") if b["metadata"]["name"] == "hubforge-scheduler"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "hubforge"
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}  # fmt: skip
    assert granted == {
        ("batch", "jobs", "create"), ("batch", "jobs", "get"), ("batch", "jobs", "delete"),
        ("batch", "jobs/status", "get"), ("", "secrets", "create"), ("", "pods", "list"), ("", "pods/log", "get"),
    }  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "hubforge"}]
    (values,) = rendered["helm-values.yaml"]
    scheduler = values["hub"]["services"]["scheduler"]
    assert scheduler["command"] == ["python3", "-m", "hubforge.hub.scheduler"]
    # Runs reach the services as people's pods do, on the hub's Service.
    runs = json.loads(scheduler["environment"]["HUBFORGE_SCHEDULER_RUN_SERVICES"])
    assert runs["HUBFORGE_MLFLOW_URL"] == values["singleuser"]["extraEnv"]["HUBFORGE_MLFLOW_URL"]
    assert runs["HUBFORGE_SCHEDULER_URL"] == "http://hub:10106/services/scheduler"
    assert values["singleuser"]["extraEnv"]["HUBFORGE_SCHEDULER_URL"] == runs["HUBFORGE_SCHEDULER_URL"]
    assert runs["HUBFORGE_APPS_URL"] == "http://hub:10105/services/apps"
    assert "HUBFORGE_FEATURES_URL" not in runs, "the features service does not run on Kubernetes yet"


def test_no_model_namespaces_without_serving(tmp_path: Path) -> None:
    path = kubernetes_platform(tmp_path, {"services": {"serving": {"enabled": False}}})
    render_k8s(load_config(path, environ={}), tmp_path / "out")
    docs = list(yaml.safe_load_all((tmp_path / "out" / "hubforge-platform.yaml").read_text()))
    kinds = ["Namespace", "Secret", "PersistentVolumeClaim", "Service", "Role", "RoleBinding"]  # the scheduler's
    assert [d["kind"] for d in docs] == kinds


def test_the_object_store_must_be_one_kserve_reads(tmp_path: Path) -> None:
    kube = {"spawner": {"type": "kubernetes"}}
    path = kubernetes_platform(tmp_path, {**kube, "backends": {"object_store_url": "/srv/models"}})
    with pytest.raises(ConfigError, match=r"backends.object_store_url: KServe serves approved models from s3:// or "
                                          r"gs:// URLs, not '/srv/models'"):  # fmt: skip
        load_config(path, environ={})
    same = {"kserve": {"namespaces": {"production": "models", "staging": "models"}}}
    path = kubernetes_platform(tmp_path, {**kube, "services": {"serving": same}})
    with pytest.raises(ConfigError, match="production and staging need one each"):
        load_config(path, environ={})
    path = kubernetes_platform(tmp_path, {**kube, "backends": {"object_store_url": "s3://models/hubforge"}})
    assert load_config(path, environ={}).backends.object_store_url == "s3://models/hubforge"
    local = kubernetes_platform(tmp_path, {"backends": {"object_store_url": "/srv/models"}})
    assert load_config(local, environ={}).backends.object_store_url == "/srv/models"  # MLflow's, on one machine


def test_a_queued_cpu_only_tier_gets_a_cpu_flavor(tmp_path: Path) -> None:
    batch = copy.deepcopy(yaml.safe_load(default_config_text())["tiers"]["training"])
    batch["resources"] = {"cpu": {"guarantee": 1, "limit": "1500m"}, "memory": {"guarantee": "1G", "limit": "2G"}}
    batch.pop("node_selector")
    batch["capacity"] = {"gpus": 0, "cpu": "2500m", "memory": "1.5G"}
    path = kubernetes_platform(tmp_path, {"tiers": {"batch": batch}})
    files = render_k8s(load_config(path, environ={}), tmp_path / "out")
    docs = list(yaml.safe_load_all((tmp_path / "out" / "kueue.yaml").read_text()))
    for doc in docs:
        validate_kueue(doc)
    (flavor,) = [d for d in docs if d["kind"] == "ResourceFlavor"]
    assert flavor["metadata"]["name"] == "cpu" and flavor["spec"] == {}
    (cohort,) = [d for d in docs if d["kind"] == "Cohort" and d["metadata"]["name"] == "hubforge-batch"]
    group = cohort["spec"]["resourceGroups"][0]
    assert group["coveredResources"] == ["cpu", "memory"]
    assert group["flavors"][0]["resources"][0]["nominalQuota"] == "2500m"
    assert group["flavors"][0]["resources"][1]["nominalQuota"] == str(3 * 512 * 1024**2)
    for cq in (d for d in docs if d["kind"] == "ClusterQueue"):
        (resources,) = [f["resources"] for g in cq["spec"]["resourceGroups"] for f in g["flavors"]]
        assert [r["name"] for r in resources] == ["cpu", "memory"] and not any("borrowingLimit" in r for r in resources)
    assert len(files) == 5


def test_the_demo_authenticator_is_refused_on_kubernetes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        render_k8s(load_config(environ={}), tmp_path / "out")
    assert str(info.value) == (
        "default platform.yaml: auth.type: the demo authenticator is for one machine; use oauth or ldap on Kubernetes"
    )
    assert not (tmp_path / "out").exists()


# --- the command line ------------------------------------------------------------------------


def run_cli(argv: Sequence[str]) -> int:
    """``hubforge``'s own main, in-process (one error line, status 2)."""
    return main(list(argv))


def test_cli_k8s_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = kubernetes_platform(tmp_path)
    assert run_cli(["k8s", "render", "--out", str(tmp_path / "out"), "--config", str(path)]) == 0
    out = capsys.readouterr().out.split()
    assert [Path(p).name for p in out] == [
        "helm-values.yaml",
        "hubforge-platform.yaml",
        "priority-classes.yaml",
        "kueue-values.yaml",
        "kueue.yaml",
    ]


def test_cli_profiles_render(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUBFORGE_CONFIG", raising=False)
    code = run_cli(["profiles", "render", "--user", "alice", "--tier", "training", "--option", "gpus=2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    pod = yaml.safe_load(captured.out)
    assert pod["kind"] == "Pod"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--user", "alice", "--tier", "finetune"], "tier 'finetune' is not open to you"),
        (["--user", "alice", "--tier", "training", "--option", "gpus=9"], "allows 1 to 4 GPUs, not 9"),
        (["--user", "alice", "--tier", "training", "--option", "image=evil"], "image 'evil' is not among"),
        (["--user", "alice", "--tier", "training", "--option", "gpus"], "--option takes KEY=VALUE, not 'gpus'"),
        (["--user", "mallory", "--tier", "training"], "no user 'mallory' in the users of default platform.yaml"),
    ],
)
def test_cli_profiles_render_refuses_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HUBFORGE_CONFIG", raising=False)
    assert run_cli(["profiles", "render", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("hubforge: error: ")
    assert message in captured.err
