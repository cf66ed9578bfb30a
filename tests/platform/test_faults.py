"""Faults on the running platform (SQLite and PostgreSQL): a process killed outright comes
back by itself, and leaves nothing behind that keeps its successor from starting.

MLflow's own process killed (its uvicorn worker and job runners used to live on as
orphans holding the port, so the hub's restarts of MLflow could never start): its
supervisor ends what MLflow started and starts MLflow again, and it answers. The
supervisor itself killed: MLflow dies with it, the hub starts the supervisor again, and
that start stops the worker and the job runners the old MLflow had started. The
governance service killed: its supervisor starts it again, and it answers.
"""

from __future__ import annotations

from typing import Any

import httpx
import psutil

from harness.faults import mlflow_answers, mlflow_supervisor, service_supervisor, supervised_port
from harness.platform import PROBE, still_running, wait_for


def _marked(port: int) -> list[psutil.Process]:
    """Every live process marked as the MLflow service's (its supervisor's command and all it started)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("HUBFORGE_SUPERVISED") == str(port) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if still_running(p)]


def _comes_back(platform: Any, before: psutil.Process, earlier: list[psutil.Process]) -> psutil.Process:
    """The new supervisor, once nothing of the ``earlier`` MLflow is left and the new one
    answers (a leftover worker answers on the port until the new start stops it)."""
    found = wait_for(
        lambda: (s := mlflow_supervisor(platform)) is not None and s.pid != before.pid and s,
        120,
        "the hub to start MLflow again",
    )
    wait_for(lambda: not _alive(earlier), 60, "what the killed MLflow had started to be stopped")
    wait_for(lambda: mlflow_answers(supervised_port(found)), 120, "MLflow to answer again")
    return found


def test_mlflow_killed_comes_back_by_itself_and_leaves_no_orphan(platform: Any) -> None:
    supervisor = mlflow_supervisor(platform)
    assert supervisor is not None, "MLflow runs under its supervisor"
    port = supervised_port(supervisor)
    wait_for(lambda: mlflow_answers(port), 120, "MLflow")
    first = [p for p in _marked(port) if p.pid != supervisor.pid]
    (server,) = [p for p in first if p.ppid() == supervisor.pid]
    assert len(first) > 1, "MLflow runs a worker of its own"

    server.kill()  # MLflow's own process, as in the issue: its worker used to live on
    wait_for(lambda: not _alive(first), 60, "what the killed MLflow had started to be stopped")
    wait_for(lambda: mlflow_answers(port), 120, "MLflow to answer again")
    assert mlflow_supervisor(platform).pid == supervisor.pid, "its supervisor started it again"
    descendants = {p.pid for p in supervisor.children(recursive=True)}
    assert {p.pid for p in _marked(port)} <= descendants | {supervisor.pid}, "only the new MLflow's processes are left"

    second = supervisor.children(recursive=True)
    supervisor.kill()  # the supervisor itself: MLflow dies with it, what MLflow started is cleared at the next start
    third = _comes_back(platform, supervisor, second)
    assert {p.pid for p in _marked(port)} <= {p.pid for p in third.children(recursive=True)} | {third.pid}


def test_the_governance_service_killed_comes_back_by_itself(platform: Any) -> None:
    supervisor = service_supervisor(platform, lambda line: "hubforge.hub.governance" in line)
    assert supervisor is not None, "governance runs under its supervisor"
    (service,) = supervisor.children()
    service.kill()
    health = f"{platform.url}/services/governance/api/health"
    wait_for(lambda: _status(health) == 200 and supervisor.children() != [service], 60, "governance to answer")
    assert service_supervisor(platform, lambda line: "hubforge.hub.governance" in line).pid == supervisor.pid
    log = platform.log_path.read_text()
    assert "exited with signal SIGKILL; starting it again in" in log


def _status(url: str) -> int | None:
    try:
        return PROBE.get(url).status_code
    except httpx.HTTPError:
        return None


def test_requests_made_while_governance_is_killed_are_kept_once_with_their_audit_events(
    platform: Any, session_for: Any
) -> None:
    """alice keeps filing data-access requests while the governance service is killed outright:
    every request it acknowledged (201) is there once, with one audit event; none is there
    twice, acknowledged or not (an answer lost with the process may leave one, never two)."""
    import threading
    import uuid

    from harness.platform import api, stored

    session, user = session_for("data-scientist")
    tag = uuid.uuid4().hex[:6]
    acked: list[tuple[str, str]] = []
    refused: list[int | None] = []
    done = threading.Event()

    def file_requests() -> None:
        with api(platform.url, session.new_token(user, note="faults")) as http:
            number = 0
            while not done.is_set():
                number += 1
                target = f"datasets/faults-{tag}-{number}"
                body = {"kind": "data-access", "target": target, "justification": "fault test", "duration_days": 1}
                try:
                    answer = http.post("/services/governance/api/requests", json=body)
                except httpx.HTTPError:
                    refused.append(None)
                    continue
                if answer.status_code == 201:
                    acked.append((str(answer.json()["id"]), target))
                else:
                    refused.append(answer.status_code)

    filer = threading.Thread(target=file_requests, daemon=True)
    filer.start()
    try:
        wait_for(lambda: len(acked) >= 5, 60, "requests to be filed")
        supervisor = service_supervisor(platform, lambda line: "hubforge.hub.governance" in line)
        assert supervisor is not None
        (service,) = supervisor.children()
        service.kill()
        wait_for(lambda: refused, 30, "a request to meet the killed service")
        before = len(acked)
        wait_for(lambda: len(acked) >= before + 5, 90, "requests to be acknowledged again")
    finally:
        done.set()
        filer.join(60)
    assert all(status in (None, 502, 503) for status in refused), refused

    listed: list[dict] = []
    with api(platform.url, session.new_token(user, note="faults")) as http:
        params: dict[str, str] = {"kind": "data-access", "limit": "500"}
        while True:  # every page: at full speed alice files hundreds while the service is away
            page = http.get("/services/governance/api/requests", params=params)
            assert page.status_code == 200, page.text
            listed += page.json()
            if "X-Next-Cursor" not in page.headers:
                break
            params["cursor"] = page.headers["X-Next-Cursor"]
    ours = [r for r in listed if r["target"].startswith(f"datasets/faults-{tag}-")]
    targets = [r["target"] for r in ours]
    assert len(targets) == len(set(targets)), "no request is there twice"
    kept = {str(r["id"]): r["target"] for r in ours}
    assert all(kept.get(rid) == target for rid, target in acked), "every acknowledged request is kept"

    def audited() -> bool:
        for rid, _ in acked:
            events = stored(platform, "resource = :r", r=f"request:{rid}")
            if [e["action"] for e in events] != ["requested"]:
                return False
        return True

    wait_for(audited, 60, "one audit event for each acknowledged request")
