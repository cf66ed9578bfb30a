"""Opening an app runs it in the viewer's own server, as the viewer.

The real apps service (behind the tests' fake hub) and real jupyter-servers with
hubforge's extension and Voila: frank's server fetches alice's app with frank's token
and Voila renders it there; the app's kernel holds frank's identity, never alice's.
bob, whom the app is not shared with, gets the 404 of an app that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.apps import RunningApps, notebook, serving_apps
from harness.server import Server
from hubforge.catalog import APPS_INTERFACE_ARGS

APP = notebook("Sales by region")
APP["cells"][2]["source"] = (
    "import os\n"
    "print('region', region, 'threshold', threshold)\n"
    "print('viewer', os.environ.get('JUPYTERHUB_USER'))\n"
    "print('token is the viewer s', os.environ.get('JUPYTERHUB_API_TOKEN') == 'frank-token')\n"
)


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApps]:
    tmp = tmp_path_factory.mktemp("apps-open")
    with serving_apps(f"sqlite:///{tmp / 'apps.sqlite'}", tmp / "files") as running:
        with running.client("alice-token") as alice:
            body = {"name": "sales", "notebook": APP, "share": ["analyst"]}
            assert alice.post("api/apps", json=body).status_code == 201
        yield running


def server_of(apps: RunningApps, user: str, tmp: Path) -> Server:
    env = {
        "JUPYTERHUB_USER": user,
        "JUPYTERHUB_API_TOKEN": f"{user}-token",
        "HUBFORGE_APPS_URL": apps.url + "/services/apps",
        "HUBFORGE_TRACKING": "off",
    }
    return Server(tmp / user, env)


def test_frank_opens_alices_app_in_his_own_server_as_himself(apps: RunningApps, tmp_path: Path) -> None:
    frank = server_of(apps, "frank", tmp_path)
    try:
        opened = frank.http.get("/hubforge/apps/alice/sales", follow_redirects=False)
        assert opened.status_code == 302, opened.text
        assert opened.headers["Location"] == "/voila/render/hubforge-apps/alice/sales.ipynb"
        page = frank.http.get(opened.headers["Location"], timeout=120)
        assert page.status_code == 200, page.text[:500]
        assert "region eu threshold 0.5" in page.text
        assert "viewer frank" in page.text
        assert "token is the viewer s True" in page.text
        kept = frank.root / "hubforge-apps" / "alice" / "sales.ipynb"
        assert "".join(json.loads(kept.read_text())["cells"][1]["source"]) == "region = 'eu'\nthreshold = 0.5"
        # alice republishes: the next open shows the new version.
        with apps.client("alice-token") as alice:
            newer = json.loads(json.dumps(APP))
            newer["cells"][1]["source"] = "region = 'apac'\nthreshold = 0.25"
            assert alice.post("api/apps", json={"name": "sales", "notebook": newer}).status_code == 201
        again = frank.http.get("/hubforge/apps/alice/sales", follow_redirects=True, timeout=120)
        assert "region apac threshold 0.25" in again.text
    finally:
        frank.stop()


def test_bob_cannot_open_what_is_not_shared_with_him(apps: RunningApps, tmp_path: Path) -> None:
    bob = server_of(apps, "bob", tmp_path)
    try:
        for path in ("/hubforge/apps/alice/sales", "/hubforge/apps/alice/no-such-app", "/hubforge/apps/alice/..%2F.."):
            assert bob.http.get(path, follow_redirects=False).status_code == 404, path
        assert not (bob.root / "hubforge-apps").exists()
    finally:
        bob.stop()


def test_an_analysts_server_runs_apps_and_nothing_else(apps: RunningApps, tmp_path: Path) -> None:
    """The apps tier's server (its interface arguments, as the spawners pass them): Voila's page
    of apps first, the app opens, and there is no JupyterLab, no terminal, no writing of files."""
    env = {
        "JUPYTERHUB_USER": "gina",
        "JUPYTERHUB_API_TOKEN": "gina-token",
        "HUBFORGE_APPS_URL": apps.url + "/services/apps",
        "HUBFORGE_TRACKING": "off",
    }
    gina = Server(tmp_path / "gina", env, args=APPS_INTERFACE_ARGS)
    try:
        page = gina.http.get("/hubforge/apps/alice/sales", follow_redirects=True, timeout=120)
        assert page.status_code == 200 and "region" in page.text, page.text[:300]
        assert "viewer gina" in page.text
        assert gina.http.get("/", follow_redirects=False).headers["Location"].rstrip("?").endswith("/voila/")
        assert gina.http.get("/lab").status_code == 404
        assert gina.http.post("/api/terminals").status_code == 404
        put = gina.http.put("/api/contents/work/x.ipynb", json={"type": "notebook", "content": notebook()})
        assert put.status_code == 403 and "only runs apps" in put.json()["message"]
        assert gina.http.post("/api/contents/work", json={"type": "file"}).status_code == 403
        kept = "/api/contents/hubforge-apps/alice/sales.ipynb"
        assert gina.http.delete(kept).status_code == 403
        assert gina.http.patch(kept, json={"path": "stolen.ipynb"}).status_code == 403
        assert gina.http.get(kept).status_code == 200  # reading is fine: Voila reads it so
    finally:
        gina.stop()
