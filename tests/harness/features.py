"""The features service as the hub runs it (``FeaturesProcess``): the Feast environment's
Python, a fake hub's environment, a catalog the test writes; and catalogs to write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from harness.hub import FakeHub
from harness.platform import free_port, wait_for
from hubforge.config import load_config
from hubforge.contract import GOVERNANCE_URL_ENV
from hubforge.features.environment import feast_python

PREFIX = "/services/features/"
ACCESS = "access:services!service=features"
SERVICE_TOKEN = "features-service-secret"
USERS = {
    "alice-token": {"kind": "user", "name": "alice", "groups": [], "scopes": [ACCESS]},
    "mallory-token": {"kind": "user", "name": "mallory", "groups": [], "scopes": []},  # no access to the service
}


def catalog(views: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 1,
        "generated": "2026-12-03T09:00:00+00:00",
        "project": {"name": "payments", "description": "demo"},
        "entities": [
            {
                "name": "customer",
                "join_keys": ["customer_id"],
                "value_type": "INT64",
                "description": "A customer.",
                "owner": "growth@example.org",
                "tags": {},
            }
        ],
        "data_sources": [],
        "feature_views": views,
        "feature_services": [
            {
                "name": "churn_model_v1",
                "views": {v["name"]: [] for v in views},
                "description": "",
                "owner": "growth@example.org",
                "tags": {"model": "churn"},
            }
        ],
    }


def view(name: str, description: str = "", **tags: str) -> dict[str, Any]:
    return {"name": name, "kind": "batch", "entities": ["customer"], "features": [], "ttl_seconds": 86400,
            "sources": [], "online": True, "materialized_to": None, "description": description,
            "owner": "growth@example.org", "tags": tags}  # fmt: skip


def apply_demo(tmp: Path) -> Path:
    """The demo repository applied into ``tmp`` as `make up` applies it (``hubforge features apply``,
    in Feast's environment); the platform's data folder."""
    (tmp / "platform.yaml").write_text("{}\n")
    hubforge = Path(sys.executable).with_name("hubforge")
    env = {"PATH": "/usr/bin:/bin", "HUBFORGE_DATA": str(tmp / "data")}
    done = subprocess.run([str(hubforge), "features", "apply", "--config", str(tmp / "platform.yaml")],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return tmp / "data"


class FeaturesProcess:
    """The service on ``data`` behind ``hub``, as ``token``; ``governance``: where it checks grants."""

    def __init__(self, hub: FakeHub, data: Path, token: str = SERVICE_TOKEN, governance: str | None = None) -> None:
        self.port = free_port()
        self.catalog_path = data / "features" / "catalog.json"
        self.log = data.parent / "features.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HUBFORGE_DATA": str(data),
            "JUPYTERHUB_API_TOKEN": token,
            "JUPYTERHUB_API_URL": hub.api_url,
            "JUPYTERHUB_SERVICE_NAME": "features",
            "JUPYTERHUB_SERVICE_PREFIX": PREFIX,
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{self.port}",
        }
        if governance:
            env[GOVERNANCE_URL_ENV] = governance
        python = feast_python(load_config(None, environ={}))
        with self.log.open("wb") as log:
            cmd = [str(python), "-m", "hubforge.hub.features"]
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}{PREFIX}", timeout=10)
        wait_for(self.healthy, 60, "the features service")

    @property
    def url(self) -> str:
        """The service's URL, as a server's ``HUBFORGE_FEATURES_URL``."""
        return f"http://127.0.0.1:{self.port}{PREFIX.rstrip('/')}"

    def healthy(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return self.client.get("api/health").status_code == 200
        except httpx.TransportError:
            return False

    def get(self, path: str, token: str | None = "alice-token", **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"token {token}"} if token else {}
        return self.client.get(path, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)

    def write(self, data: Any) -> None:
        self.catalog_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.catalog_path.with_suffix(".tmp")
        tmp.write_text(data if isinstance(data, str) else json.dumps(data))
        os.replace(tmp, self.catalog_path)

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
