"""The audit trail loses nothing and stores nothing twice: ``kill -9`` of the governance
service in the middle of ingesting, and its store away for 30 s under load.

The governance service runs as the real process (``python -m hubforge.hub.governance``)
behind the fake hub, collecting the platform's spools from its data folder while a
person's server forwards its own spool to the ingest API with the person's token. What
the emitters acknowledged must all be in the trail once, numbered without a gap, and
the chain must verify.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from harness.governance import PREFIX, Running
from harness.platform import PROBE, free_port, pg_databases, wait_for
from harness.tcpproxy import TcpProxy
from hubforge.events.spool import EVENTS_FILE, EventSpool, platform_spool_dir
from hubforge.hub.governance.audit import KEY_FILE, load_public_key, verify
from hubforge.hub.governance.store import GovernanceStore
from hubforge.server_extension.forward import AuditForwarder

# The service under test is a process of its own; the ``running`` fixture only lends its fake hub.
pytestmark = pytest.mark.parametrize("backend_store", ["sqlite"], indirect=True)

CONTENTS = "https://events.hubforge.dev/server/contents/v1"
SERVER = "https://events.hubforge.dev/hub/server/v1"


def hub_event(i: int) -> dict[str, Any]:
    return {"user": f"user{i % 7}", "action": "spawn", "resource": {"type": "server", "id": f"user{i % 7}/"},
            "outcome": "success", "origin": {"observer": "hub"}, "tier": "interactive"}  # fmt: skip


def file_event(i: int) -> dict[str, Any]:
    return {"user": "alice", "action": "save", "resource": {"type": "file", "id": f"work/{i}.py"},
            "outcome": "success", "origin": {"observer": "server"}, "path": f"work/{i}.py"}  # fmt: skip


class GovernanceProcess:
    """``python -m hubforge.hub.governance`` on a free port, with ``data`` as its data folder."""

    def __init__(self, running: Running, data: Path, db_url: str) -> None:
        self.port = free_port()
        self.data, self.db_url = data, db_url
        self.log = data.parent / "governance.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "HUBFORGE_"))},
            **running.hub_env(),
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{self.port}",
            "HUBFORGE_DATA": str(data),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}api/audit/events"

    def start(self) -> GovernanceProcess:
        with self.log.open("ab") as log:
            cmd = [sys.executable, "-m", "hubforge.hub.governance", f"--db-url={self.db_url}"]
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._healthy, 60, "the governance service")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return PROBE.get(f"http://127.0.0.1:{self.port}{PREFIX}api/health").status_code == 200
        except httpx.TransportError:
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Trail:
    """The trail's rows in the service's database, read as a second client would."""

    def __init__(self, db_url: str) -> None:
        self.store = GovernanceStore(db_url)

    def count(self) -> int:
        try:
            with self.store.engine.connect() as conn:
                return int(conn.execute(sa.text("SELECT count(*) FROM gov_audit_events")).scalar() or 0)
        except sa.exc.SQLAlchemyError:  # not made yet, or (SQLite) being written
            return 0

    def keys(self) -> list[tuple[str, int]]:
        with self.store.engine.connect() as conn:
            return [(r.emitter, r.seq) for r in conn.execute(sa.text("SELECT emitter, seq FROM gov_audit_events"))]

    def close(self) -> None:
        self.store.dispose()


def assert_complete(trail: Trail, data: Path, expected: dict[str, int]) -> None:
    """Each emitter's records 1..N in the trail exactly once, and the chain verifies."""
    keys = trail.keys()
    assert len(keys) == len(set(keys)), "no record stored twice"
    by_emitter: dict[str, list[int]] = {}
    for emitter, seq in keys:
        by_emitter.setdefault(emitter.split("/")[0] if emitter.startswith("hub") else emitter.rsplit("/", 1)[0],
                              []).append(seq)  # fmt: skip
    assert {k: sorted(v) for k, v in by_emitter.items()} == {k: list(range(1, n + 1)) for k, n in expected.items()}
    verdict = verify(trail.store, load_public_key(data / f"{KEY_FILE}.pub"))
    assert verdict.intact, verdict.problem


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'governance.sqlite'}"
    else:
        with pg_databases("governance") as urls:
            yield urls["governance"]


def test_kill_9_of_the_governance_service_mid_ingest_loses_nothing_and_stores_nothing_twice(
    running: Running, tmp_path: Path, db_url: str
) -> None:
    data = tmp_path / "data"
    hub = EventSpool(platform_spool_dir(data, "hub"), "hub", fsync=False)
    for i in range(20_000):
        hub.emit(SERVER, hub_event(i))
    assert hub.close(60)
    server = EventSpool(tmp_path / "alice" / "server", "server", fsync=False)
    for i in range(3_000):
        server.emit(CONTENTS, file_event(i))
    assert server.close(60)
    total = 23_000
    trail = Trail(db_url)
    service = GovernanceProcess(running, data, db_url).start()
    forwarder = AuditForwarder(tmp_path / "alice", service.ingest_url, "alice-token", "", interval=0.1)
    forwarder.backoff_max = 1.0
    forwarder.start()
    kills = 0
    try:
        for _ in range(2):
            seen = trail.count()
            progressed = wait_for(lambda seen=seen: (n := trail.count()) > seen and n, 60, "progress", 0.005)
            if progressed >= total:
                break
            service.kill9()  # mid-ingest: a collection or an ingest request is in a transaction
            kills += 1
            service.start()
        wait_for(lambda: trail.count() >= total, 120, "every record in the trail")
        assert kills >= 1, "the service was killed while it ingested"
        assert_complete(trail, data, {"hub": 20_000, "server:alice/:server": 3_000})
    finally:
        forwarder.stop()
        service.stop()
        trail.close()


@pytest.mark.postgres
def test_the_store_away_for_30_s_under_load_loses_nothing(running: Running, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        real = stack.enter_context(pg_databases("governance"))["governance"]
        trail = Trail(real)
        stack.callback(trail.close)
        proxy = TcpProxy(("127.0.0.1", 5432))
        stack.callback(proxy.close)
        db_url = real.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        data = tmp_path / "data"
        service = GovernanceProcess(running, data, db_url).start()
        stack.callback(service.stop)
        forwarder = AuditForwarder(tmp_path / "alice", service.ingest_url, "alice-token", "", interval=0.2)
        forwarder.backoff_max = 2.0
        forwarder.start()
        stack.callback(forwarder.stop)
        stop = threading.Event()
        counts = {"hub": 0, "server": 0}

        def emit(spool: EventSpool, name: str, event: Any) -> None:
            while not stop.is_set():  # ~500 events a second each, in bursts
                for _ in range(50):
                    counts[name] += 1
                    spool.emit(SERVER if name == "hub" else CONTENTS, event(counts[name]))
                time.sleep(0.1)
            assert spool.close(30)

        hub = EventSpool(platform_spool_dir(data, "hub"), "hub")
        server = EventSpool(tmp_path / "alice" / "server", "server")
        emitters = [threading.Thread(target=emit, args=args) for args in ((hub, "hub", hub_event),
                                                                          (server, "server", file_event))]  # fmt: skip
        for thread in emitters:
            thread.start()
        try:
            time.sleep(3)
            proxy.cut()
            time.sleep(30)
            during = trail.count()
            probe = EventSpool(tmp_path / "probe", "probe")
            probe.emit(CONTENTS, file_event(0))
            assert probe.close()
            records = [json.loads(line) for line in (tmp_path / "probe" / EVENTS_FILE).read_text().splitlines()]
            answer = httpx.post(service.ingest_url, json={"server": "", "source": "probe", "records": records},
                                headers={"Authorization": "token alice-token"})  # fmt: skip
            assert answer.status_code == 503 and "unavailable" in answer.json()["message"]
            waiting = wait_for(lambda: forwarder.failure, 10, "the forwarder's next pass")
            assert "503" in waiting, "the server's events wait in its spool"
            proxy.restore()
            time.sleep(3)
        finally:
            stop.set()
            for thread in emitters:
                thread.join(30)
        total = counts["hub"] + counts["server"]
        assert during < total, "events kept coming while the store was away"
        wait_for(lambda: trail.count() >= total, 120, "every record in the trail after the outage")
        assert service.proc is not None and service.proc.poll() is None, "the service rode the outage out"
        assert_complete(trail, data, {"hub": counts["hub"], "server:alice/:server": counts["server"]})
