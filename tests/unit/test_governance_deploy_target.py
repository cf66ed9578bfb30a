"""Where the governance service sends approved deployments: the router on one machine, KServe
on Kubernetes (through the object store), or nowhere, saying why."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from hubforge.config import load_config
from hubforge.contract import SERVING_URL_ENV
from hubforge.errors import ConfigError
from hubforge.hub.governance.app import GovernanceService
from hubforge.hub.governance.deployments import ServingClient
from hubforge.hub.governance.kserve_deploy import KServeDeploy
from hubforge.hub.governance.object_store import ObjectStoreCopies
from hubforge.hub.governance.snapshots import Snapshot

KUBE = {"spawner": {"type": "kubernetes"}, "auth": {"type": "ldap", "ldap": {"server_address": "ldap.example.org"}}}


def service(tmp_path: Path, extra: dict[str, Any]) -> GovernanceService:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), **extra}))
    gov = GovernanceService()
    gov.platform = load_config(path, environ={})
    gov.hub_auth = SimpleNamespace(api_token="governance-token")  # type: ignore[assignment]
    return gov


def test_one_machine_deploys_through_the_router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERVING_URL_ENV, "http://127.0.0.1:10103/services/serving")
    target, where = service(tmp_path, {})._deploy_target()
    assert isinstance(target, ServingClient) and where == "http://127.0.0.1:10103/services/serving"
    asyncio.run(target.close())
    monkeypatch.delenv(SERVING_URL_ENV)
    assert service(tmp_path, {})._deploy_target() == (None, "the serving router is not running")


def test_kubernetes_deploys_through_kserve_and_the_object_store(tmp_path: Path) -> None:
    extra = {**KUBE, "backends": {"object_store_url": "s3://models/hubforge/"}}
    target, where = service(tmp_path, extra)._deploy_target()
    assert isinstance(target, KServeDeploy)
    assert target.ready_timeout == 600
    assert where == (
        "KServe (production in hubforge-models, staging in hubforge-models-staging; copies under s3://models/hubforge/)"
    )
    snapshot = Snapshot("churn", "3", tmp_path / "churn-1a2b3c4d" / "v3-0123456789abcdef", "sha256:" + "0" * 64)
    assert target.copies.uri(snapshot) == "s3://models/hubforge/deployments/churn-1a2b3c4d/v3-0123456789abcdef"


def test_kubernetes_without_an_object_store_records_without_serving(tmp_path: Path) -> None:
    target, where = service(tmp_path, KUBE)._deploy_target()
    assert target is None and "backends.object_store_url, which is empty" in where
    target, where = service(tmp_path, {**KUBE, "services": {"serving": {"enabled": False}}})._deploy_target()
    assert (target, where) == (None, "services.serving.enabled is false")


def test_an_object_store_kserve_cannot_read_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be s3:// or gs://, not 'file:///srv/models'"):
        ObjectStoreCopies("file:///srv/models")
