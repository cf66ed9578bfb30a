"""A person's server records what they do with files, kernels and cells, and it reaches the trail.

A real ``jupyter-server`` with hubforge's extension, driven over its REST API and a
kernel's websocket as JupyterLab drives them (a notebook created as Untitled and
renamed, opened, saved; a file uploaded, downloaded and deleted; two cells, one
failing; a restart; a shutdown), reports to the real governance service behind the
fake hub with the person's token. What the trail then holds is checked as an auditor
would read it: one event per action, the person as who, the renamed path, the cells'
hashes, nothing for directory listings.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from harness.governance import PREFIX, Running
from harness.platform import wait_for
from harness.server import TOKEN, KernelChannel, Server
from hubforge.hub.governance.audit import AuditQuery, query_events
from hubforge.hub.governance.store import GovernanceStore

# One backend is enough here: the ingest path on both is tested in test_audit_ingest.
pytestmark = pytest.mark.parametrize("backend_store", ["sqlite"], indirect=True)

CELLS = {"c1": "x = 1\nprint(x)", "c2": "1 / 0"}


def trail(store: GovernanceStore) -> list[dict[str, Any]]:
    page, _ = query_events(store, AuditQuery(user="alice", limit=1000))
    return [e for e in reversed(page) if e["emitter"].startswith("server:alice/")]


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [(e["schema"].split("/")[-2], e["action"], e["resource"]["id"], e["outcome"]) for e in events]


@pytest.fixture
def server(running: Running, tmp_path: Path) -> Any:
    env = {
        "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_API_TOKEN": "alice-token",
        "HUBFORGE_AUDIT_URL": f"{running.url}{PREFIX}api/audit/events",
        "HUBFORGE_TRACKING": "off",
    }
    s = Server(tmp_path, env, args=("--HubforgeAudit.forward_interval=0.2",))
    yield s
    s.stop()


def test_what_a_person_does_in_their_server_reaches_the_trail_as_theirs(
    server: Server, backend_store: GovernanceStore
) -> None:
    http = server.http
    created = http.post("/api/contents/work", json={"type": "notebook"})
    assert created.status_code == 201, created.text
    untitled = created.json()["path"]
    assert http.patch(f"/api/contents/{untitled}", json={"path": "work/churn.ipynb"}).status_code == 200
    notebook = http.get("/api/contents/work/churn.ipynb").json()
    saved = http.put("/api/contents/work/churn.ipynb", json={"type": "notebook", "content": notebook["content"]})
    assert saved.is_success
    assert http.get("/api/contents/work").status_code == 200  # a listing: not a file opened
    upload = {"type": "file", "format": "base64", "content": base64.b64encode(b"id,churn\n1,0\n").decode()}
    assert http.put("/api/contents/work/data.csv", json=upload).status_code == 201
    assert http.get("/files/work/data.csv", params={"download": "1"}).content == b"id,churn\n1,0\n"
    assert http.delete("/api/contents/work/data.csv").status_code == 204

    session = http.post("/api/sessions", json={"path": "work/churn.ipynb", "name": "churn.ipynb",
                                               "type": "notebook", "kernel": {"name": "python3"}}).json()  # fmt: skip
    kernel = session["kernel"]["id"]
    channel = KernelChannel(f"ws://127.0.0.1:{server.port}/api/kernels/{kernel}/channels", f"token {TOKEN}")
    try:
        assert channel.execute(CELLS["c1"], cell_id="c1").stdout == "1\n"
        assert channel.execute(CELLS["c2"], cell_id="c2").status == "error"
    finally:
        channel.close()
    assert http.post(f"/api/kernels/{kernel}/restart").status_code == 200
    assert http.delete(f"/api/sessions/{session['id']}", timeout=60).status_code == 204

    expected = [
        ("contents", "save", untitled, "success"),  # jupyter-server's contents events say "save" for a new file
        ("contents", "rename", "work/churn.ipynb", "success"),
        ("contents", "open", "work/churn.ipynb", "success"),
        ("contents", "save", "work/churn.ipynb", "success"),
        ("contents", "save", "work/data.csv", "success"),
        ("contents", "upload", "work/data.csv", "success"),
        ("contents", "download", "work/data.csv", "success"),
        ("contents", "delete", "work/data.csv", "success"),
        ("kernel", "start", kernel, "success"),
        ("cell", "execute", "work/churn.ipynb#c1", "success"),
        ("cell", "execute", "work/churn.ipynb#c2", "failure"),
        ("kernel", "restart", kernel, "success"),
        ("kernel", "stop", kernel, "success"),
    ]

    def arrived() -> bool:
        have = summary(trail(backend_store))
        return all(item in have for item in expected)

    try:
        wait_for(arrived, 60, "the server's events in the trail")
    except TimeoutError:
        missing = [item for item in expected if item not in summary(trail(backend_store))]
        raise AssertionError(f"not in the trail: {missing}; the server's log:\n{server.log[-3000:]}") from None
    events = trail(backend_store)
    have = summary(events)
    assert sorted(have) == sorted(set(have)), "nothing stored twice"
    files = [item for item in have if item[0] == "contents"]
    assert sorted(files) == sorted(item for item in expected if item[0] == "contents"), "no listing, nothing else"
    for kind in ("kernel", "cell"):  # each spool's events in the order they happened
        assert [item for item in have if item[0] == kind] == [item for item in expected if item[0] == kind]
    assert all(e["user"] == "alice" and e["observed"] == "reported" for e in events)
    rename = next(e for e in events if e["action"] == "rename")
    assert rename["event"]["source_path"] == untitled
    assert next(e for e in events if e["action"] == "download")["event"]["origin"]["client_address"] == "127.0.0.1"
    cells = {e["event"]["cell_id"]: e["event"] for e in events if e["action"] == "execute"}
    for cell_id, source in CELLS.items():
        assert cells[cell_id]["source_sha256"] == hashlib.sha256(source.encode()).hexdigest()
        assert cells[cell_id]["notebook"] == "work/churn.ipynb"
        assert "source" not in cells[cell_id], "the source only when the platform asks"
        assert cells[cell_id]["origin"] == {"observer": "kernel", "server": "alice/"}
    assert {e["emitter"].split(":")[-1].split("/")[0] for e in events} == {"server", f"kernel-{kernel}"}
    assert (server.audit_dir / "server").is_dir()
    wait_for(lambda: not (server.audit_dir / f"kernel-{kernel}").exists(), 30, "the ended kernel's spool removed")
