"""Logins reach the one audit trail through the real platform, and the trail verifies.

On the running platform (SQLite and PostgreSQL): a person logs in, someone fails to
log in with a forged name; the hub spools both, the governance service collects them
into the hash-chained trail within seconds, and ``hubforge audit verify`` (the real
command, on the platform's config) finds the chain intact and signed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from harness.models import register_model
from harness.platform import HubSession, PlatformProcess, api, stored, wait_for


def trail(platform: PlatformProcess, since: str) -> list[dict[str, Any]]:
    """The login records of the trail with a name starting with ``since`` (this test's names)."""
    found = stored(platform, "schema LIKE '%/hub/authentication/v1'")
    return [r for r in found if r["user"].startswith(since) or r["user"] == "alice"]


def test_logins_reach_the_trail_and_it_verifies(platform: PlatformProcess) -> None:
    tag = f"nobody-{uuid.uuid4().hex[:6]}"
    before = {r["position"] for r in trail(platform, tag)}
    alice = HubSession(platform.url)
    stranger = HubSession(platform.url)
    try:
        assert alice.login("alice").status_code == 302
        assert stranger.login(f"{tag}\n[I] forged log line", password="wrong").status_code == 403
    finally:
        alice.close()
        stranger.close()

    def arrived() -> list[dict[str, Any]]:
        new = [r for r in trail(platform, tag) if r["position"] not in before]
        actions = {(r["action"], r["user"][: len(tag)] if r["user"].startswith(tag) else r["user"]) for r in new}
        return new if {("login", "alice"), ("login_failed", tag)} <= actions else []

    new = wait_for(arrived, 30, "the logins to reach the audit trail")
    failed = next(r for r in new if r["action"] == "login_failed")
    assert failed["user"] == f"{tag}\\n[I] forged log line", "the name is kept escaped: no line is injected"
    assert failed["outcome"] == "failure" and failed["origin"]["observer"] == "hub"
    assert failed["origin"]["client_address"] == "127.0.0.1"
    assert {r["observed"] for r in new} == {"platform"}

    hubforge = Path(sys.executable).with_name("hubforge")
    env = {k: v for k, v in os.environ.items() if k not in ("HUBFORGE_CONFIG", "HUBFORGE_DATA")}
    check = subprocess.run(
        [str(hubforge), "audit", "verify", "--config", str(platform.config_path)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("ok: ") and check.stdout.strip().endswith("the chain is intact")
    key = platform.data_dir / "audit-signing-key.pem"
    assert oct(key.stat().st_mode & 0o777) == oct(0o600), "the signing key is the platform account's alone"


def test_spawns_refusals_and_stops_reach_the_trail(platform: PlatformProcess) -> None:
    """And what the person does in their server: reported by it, under its own token."""
    before = {r["position"] for r in server_events(platform, "dan")}
    note = f"audit-{uuid.uuid4().hex[:6]}.txt"
    session = HubSession(platform.url)
    try:
        assert session.login("dan").status_code == 302
        http = api(platform.url, session.new_token("dan", note="audit"))
        assert http.post("/hub/api/users/dan/server", json={"profile": "finetune"}).status_code == 403
        assert http.post("/hub/api/users/dan/server", json={"profile": "interactive"}).status_code in (201, 202)
        wait_for(lambda: http.get("/hub/api/users/dan").json()["servers"].get("", {}).get("ready"), 180, "dan's server")
        # A file saved in dan's server: reported by it, under its own token, through the proxy.
        saved = http.put(f"/user/dan/api/contents/{note}", json={"type": "file", "format": "text", "content": "x"})
        assert saved.status_code == 201, saved.text
        assert http.delete("/hub/api/users/dan/server").status_code in (202, 204)
        wait_for(lambda: not http.get("/hub/api/users/dan").json()["servers"], 90, "dan's server to stop")
        http.close()
    finally:
        session.close()

    def arrived() -> list[tuple[str, str, str]]:
        new = [r for r in server_events(platform, "dan") if r["position"] not in before]
        seen = [(r["action"], r["outcome"], r["tier"]) for r in new]
        wanted = [
            ("spawn", "denied", "finetune"),
            ("spawn", "success", "interactive"),
            ("stop", "success", "interactive"),
        ]
        return seen if seen == wanted else []

    wait_for(arrived, 30, "dan's spawn, refusal and stop to reach the audit trail")
    (saved,) = wait_for(lambda: stored(platform, "resource = :r", r=f"file:{note}"), 30, "dan's save in the trail")
    assert (saved["user"], saved["action"], saved["observed"]) == ("dan", "save", "reported")
    assert saved["__emitter__"] == "server:dan/:server" and saved["origin"]["server"] == "dan/"


def test_logouts_and_group_changes_reach_the_trail(platform: PlatformProcess) -> None:
    group = f"audit-{uuid.uuid4().hex[:6]}"
    session = HubSession(platform.url)
    try:
        assert session.login("erin").status_code == 302  # a platform admin
        admin = api(platform.url, session.new_token("erin", note="audit"))
        assert admin.post(f"/hub/api/groups/{group}", json={"users": ["bob"]}).status_code == 201
        assert admin.request("DELETE", f"/hub/api/groups/{group}/users", json={"users": ["bob"]}).status_code == 200
        assert admin.delete(f"/hub/api/groups/{group}").status_code == 204
        admin.close()
        alice = HubSession(platform.url)
        assert alice.login("alice").status_code == 302
        sneaky = api(platform.url, alice.new_token("alice", note="audit"))
        assert sneaky.post("/hub/api/groups/platform-admin/users", json={"users": ["alice"]}).status_code == 403
        sneaky.close()
        assert alice.client.get("/hub/logout").status_code in (200, 302)
        alice.close()
    finally:
        session.close()
    wanted = [
        ("erin", "group_added", "bob", "success"),
        ("erin", "group_removed", "bob", "success"),
        ("erin", "group_removed", None, "success"),
    ]

    def arrived() -> list[tuple[str, str, str | None, str]]:
        rows = stored(platform, "resource = :r", r=f"group:{group}")
        seen = [(r["user"], r["action"], r.get("target_user"), r["outcome"]) for r in rows]
        return seen if seen == wanted else []

    wait_for(arrived, 30, "the group changes in the trail")
    refused = wait_for(lambda: stored(platform, "resource = 'group:platform-admin' AND \"user\" = 'alice'"), 30,
                       "alice's refused group change")  # fmt: skip
    assert (refused[-1]["action"], refused[-1]["outcome"], refused[-1]["target_user"]) == (
        "group_added",
        "denied",
        "alice",
    )
    logouts = wait_for(lambda: stored(platform, "action = 'logout' AND \"user\" = 'alice'"), 30, "alice's logout")
    assert logouts[-1]["origin"]["observer"] == "hub" and logouts[-1]["outcome"] == "success"


def server_events(platform: PlatformProcess, user: str) -> list[dict[str, Any]]:
    return stored(platform, "schema LIKE '%/hub/server/v1' AND \"user\" = :user", user=user)


def test_a_deployment_approval_reaches_the_trail_from_the_governance_service(platform: PlatformProcess) -> None:
    people = {}
    sessions = []
    for user in ("alice", "carol"):
        session = HubSession(platform.url)
        sessions.append(session)
        assert session.login(user).status_code == 302
        people[user] = api(platform.url, session.new_token(user, note="audit"))
    try:
        token = people["alice"].headers["Authorization"].split()[1]
        model = register_model(platform.url + "/services/mlflow", token, "alice", prefix="churn")
        body = {"kind": "deploy-staging", "model": model.name, "version": model.version, "justification": "AUC +4"}
        created = people["alice"].post("/services/governance/api/requests", json=body)
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]
        decided = sessions[1].decide(request_id)  # carol, in her browser: no token decides
        assert decided.status_code == 200, decided.text
    finally:
        for client in people.values():
            client.close()
        for session in sessions:
            session.close()

    def arrived() -> list[tuple[str, str]]:
        rows = stored(platform, "resource = :r AND schema LIKE '%/deployment/v1'", r=f"request:{request_id}")
        seen = [(r["action"], r["user"]) for r in rows]
        # the request, its approval, then the deployment the approval started (staging is served too)
        wanted = [("requested", "alice"), ("approved", "carol"), ("executed", "carol")]
        return seen if seen == wanted and {r["observed"] for r in rows} == {"platform"} else []

    wait_for(arrived, 120, "the request, its approval and its deployment to reach the audit trail")
