"""The launcher's small parts on real processes: the instance marker finds the platform's own.

The parts that need no process are in tests/unit/test_launcher_units.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.platform import PROBE
from hubforge.hub.launcher import instance_processes


def test_instance_processes_finds_marked_processes_only(tmp_path: Path) -> None:
    marker = str(tmp_path)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours = subprocess.Popen(sleeper, env={**os.environ, "HUBFORGE_INSTANCE": marker})
    other = subprocess.Popen(sleeper, env={**os.environ, "HUBFORGE_INSTANCE": marker + "-other"})
    try:
        assert [p.pid for p in instance_processes(marker)] == [ours.pid]
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()


def _chp(port: int, api_port: int, token: str, marker: str) -> subprocess.Popen[bytes]:
    from hubforge.hub.launcher import find_proxy_command

    env = {**os.environ, "HUBFORGE_INSTANCE": marker, "CONFIGPROXY_AUTH_TOKEN": token}
    cmd = [find_proxy_command(), "--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1"]
    return subprocess.Popen([*cmd, "--api-port", str(api_port)], env=env, stdout=subprocess.DEVNULL)


def test_a_restarted_hub_takes_the_running_proxy_over_and_keeps_its_routes(tmp_path: Path) -> None:
    """The proxy a dead hub left is taken over only when it is this instance's and answers its token."""
    import asyncio

    import httpx

    from harness.platform import wait_for
    from hubforge.hub.launcher import free_port
    from hubforge.hub.proxy import KeptProxy, running_proxy

    port, api_port, token, marker = free_port(), free_port(), "s3cret" * 8, str(tmp_path)
    chp = _chp(port, api_port, token, marker)
    pid_file = tmp_path / "proxy.pid"
    pid_file.write_text(str(chp.pid))
    api = f"http://127.0.0.1:{api_port}"
    try:
        wait_for(lambda: _answers(f"{api}/api/routes", token), 30, "the proxy's API")
        route = httpx.post(
            f"{api}/api/routes/user/alice",
            json={"target": "http://127.0.0.1:9", "jupyterhub": True},
            headers=_auth(token),
        )
        assert route.status_code == 201
        assert running_proxy(str(pid_file), marker + "-other") is None, "another instance's proxy is not ours"
        assert running_proxy(str(pid_file), marker).pid == chp.pid

        async def take_over() -> tuple[int, dict]:
            proxy = KeptProxy(pid_file=str(pid_file), instance=marker, api_url=api, auth_token=token)
            await proxy.start()
            try:
                return proxy.proxy_process.pid, await proxy.get_all_routes()
            finally:
                proxy._check_running_callback.stop()

        pid, routes = asyncio.run(take_over())
        assert pid == chp.pid, "the running proxy was taken over, not replaced"
        assert "/user/alice/" in routes, "with the routes people were using"
        assert chp.poll() is None
    finally:
        chp.kill()
        chp.wait()
    assert running_proxy(str(pid_file), marker) is None, "a dead proxy is nobody's to take over"
    pid_file.write_text(str(os.getpid()))
    assert running_proxy(str(pid_file), marker) is None, "a pid reused by another program is not the proxy"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


def _answers(url: str, token: str) -> bool:
    import httpx

    try:
        return PROBE.get(url, headers=_auth(token)).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_supervisor_reaps_what_a_dead_hub_left() -> None:
    """As subreaper, ``hubforge up`` inherits the orphans of a dead hub: each one that ends is
    reaped, so a server that ended while the hub was away never looks alive (a zombie's pid
    still answers ``kill(pid, 0)``, the spawner's poll)."""
    import psutil

    script = (
        "import os, sys, time\n"
        "from hubforge.processes import become_subreaper\n"
        "from hubforge.hub.launcher import reap_orphans\n"
        "become_subreaper()\n"
        "hub = os.fork()\n"
        "if hub == 0:\n"
        "    orphan = os.fork()\n"
        "    if orphan == 0:\n"
        "        time.sleep(0.5); os._exit(0)\n"
        "    print(orphan, flush=True); os._exit(0)\n"  # the 'hub' dies, its child is handed to us
        "os.waitpid(hub, 0)\n"
        "time.sleep(2)\n"
        "print(open(f'/proc/{int(sys.stdin.readline())}/stat').read().split()[2], flush=True)\n"
        "reap_orphans(None)\n"
        "print(os.path.exists(f'/proc/{int(sys.stdin.readline())}'), flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    orphan = int(proc.stdout.readline())
    proc.stdin.write(f"{orphan}\n{orphan}\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "Z", "the ended orphan waits for its new parent"
    assert proc.stdout.readline().strip() == "False", "and is gone once reaped"
    assert proc.wait(30) == 0
    assert not psutil.pid_exists(orphan)


def test_privileged_ports_are_free_ones_only_a_privileged_process_may_bind() -> None:
    """Internal ports on a machine shared by people: below the unprivileged start, free, not taken."""
    import socket

    from hubforge.hub.launcher import PRIVILEGED_FLOOR, free_privileged_port, privileged_port_limit

    if os.geteuid() != 0 or privileged_port_limit() <= PRIVILEGED_FLOOR:
        assert os.geteuid() != 0 or free_privileged_port(set()) is None
        return
    first = free_privileged_port(set())
    assert first is not None and PRIVILEGED_FLOOR <= first < privileged_port_limit()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", first))
        holder.listen()
        second = free_privileged_port(set())
        assert second is not None and second != first, "a port in use is not handed out"
    assert free_privileged_port({first, second}) not in (first, second), "nor one already taken"
    # Someone without privileges cannot bind it: a child that drops to nobody tries.
    probe = (
        "import socket, sys; s = socket.socket()\n"
        "try:\n s.bind(('127.0.0.1', int(sys.argv[1])))\nexcept PermissionError:\n sys.exit(13)"
    )
    refused = subprocess.run([sys.executable, "-c", probe, str(first)], user="nobody", check=False)
    assert refused.returncode == 13


def test_platforms_starting_at_once_never_claim_the_same_privileged_port(tmp_path: Path) -> None:
    """Free is free until bound, and a service binds its port seconds later: each launcher
    records its ports, and another skips them while the launcher that claimed them lives."""
    from hubforge.hub.launcher import claim_privileged_ports, release_ports

    if os.geteuid() != 0:
        return  # only root picks privileged ports
    claims = tmp_path / "ports.json"
    first = claim_privileged_ports("/srv/a", [0, 0, 0, 8081], set(), claims)
    second = claim_privileged_ports("/srv/b", [0, 0, 0], set(), claims)
    assert len(set(first[:3])) == 3 and first[3] == 8081, "a configured port is kept, and claimed"
    assert set(first).isdisjoint(second), "none of a's ports for b, though none is bound yet"
    again = claim_privileged_ports("/srv/a", [first[0], 0], set(), claims)
    assert again[0] == first[0] and again[1] not in second, "a's new claim replaces its old one"
    release_ports("/srv/a", claims)
    recorded = json.loads(claims.read_text())
    assert set(recorded) == {"/srv/b"}
    # A claim whose launcher is gone counts for nothing.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claims.write_text(json.dumps({"/srv/c": {"pid": dead.pid, "ports": second}}))
    reused = claim_privileged_ports("/srv/d", [0], set(), claims)
    assert "/srv/c" not in json.loads(claims.read_text()) and reused[0] != 0


def _fit_logger(spool: Path, marker: str) -> subprocess.Popen[str]:
    """A kernel's fit logger as a kernel starts it, marked as the platform's: it works until
    its input ends (the kernel closed it), then exits."""
    from hubforge.contract import FIT_LOGGER_MODULE, INSTANCE_ENV

    return subprocess.Popen(
        [sys.executable, "-m", FIT_LOGGER_MODULE, "--spool", str(spool)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, INSTANCE_ENV: marker, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},  # given no fit
        start_new_session=True,
    )


def test_a_stopping_platform_waits_for_the_fit_loggers_before_mlflow(tmp_path: Path) -> None:
    """Stopping `hubforge up` stops the people's servers, then waits for the fit loggers their
    kernels left (each ends a fit's run in MLflow once its model is logged), then the hub and
    MLflow; a fit logger busy past the grace is left to the last sweep."""
    import threading
    import time

    from hubforge.config import load_config
    from hubforge.hub.launcher import Platform

    (tmp_path / "data").mkdir()
    platform = Platform(load_config(environ={"HUBFORGE_DATA": str(tmp_path / "data")}), log=(said := []).append)
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 env={**os.environ, "HUBFORGE_INSTANCE": platform.instance})  # fmt: skip
    logger = _fit_logger(tmp_path / "spool", platform.instance)
    try:
        # The logger's input ends 1.5 s into the wait; it exits once it has started (seconds
        # on a busy machine, it imports MLflow): the wait ends with it, well before the grace.
        threading.Timer(1.5, logger.stdin.close).start()  # type: ignore[union-attr]
        began = time.monotonic()
        platform.wait_for_fit_loggers(300)
        waited = time.monotonic() - began
        assert logger.poll() == 0 and 1.0 < waited < 290, waited
        assert said == [
            "waiting up to 300 s for 1 fit logger(s) to log their fits to MLflow (Ctrl-C again stops them now)"
        ]
        assert unrelated.poll() is None, "only the fit loggers are waited for"

        said.clear()
        busy = _fit_logger(tmp_path / "spool", platform.instance)
        try:
            platform.wait_for_fit_loggers(1)
            assert said[-1] == "1 fit logger(s) still busy; their fits are logged when the servers next start"
            assert busy.poll() is None, "left running: the platform's last sweep stops it"
            # A second Ctrl-C (or SIGTERM) while it waits: the wait ends at once.
            said.clear()
            threading.Timer(1.0, platform.signals.append, args=(2,)).start()
            began = time.monotonic()
            platform.wait_for_fit_loggers(300)
            assert time.monotonic() - began < 60 and said[-1].startswith("1 fit logger(s) still busy")
        finally:
            busy.kill()
            busy.wait()
        said.clear()
        platform.wait_for_fit_loggers(300)
        assert said == [], "no fit logger: no wait"
    finally:
        for proc in (logger, unrelated):
            proc.kill()
            proc.wait()
