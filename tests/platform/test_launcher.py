"""`hubforge up` as a process: a stop signal stops everything, a crash leaves nothing in the way.

SIGTERM (systemd's stop) is here; Ctrl-C (SIGINT), with a notebook's run open, is in
test_hub_restart.py, which checks the same through :func:`harness.platform.assert_all_stopped`.
Each test starts a platform of its own; a second ``hubforge up`` for a running platform is
refused in test_platform.py, against the layer's shared platforms.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import psutil

from harness.platform import HubSession, PlatformProcess, api, assert_all_stopped, up_in_foreground, wait_for
from hubforge.hub.launcher import instance_processes


def names(procs: list[psutil.Process]) -> str:
    return " ".join(sorted(" ".join(p.cmdline()[:3]) for p in procs if p.is_running()))


def start_server(platform: PlatformProcess, user: str = "alice") -> None:
    session = HubSession(platform.url)
    try:
        assert session.login(user).status_code == 302
        with api(platform.url, session.new_token(user)) as client:
            assert client.post(f"/hub/api/users/{user}/server").status_code in (201, 202)
            wait_for(
                lambda: client.get(f"/hub/api/users/{user}").json()["servers"].get("", {}).get("ready"),
                120,
                "alice's server",
            )
    finally:
        session.close()


def test_start_after_a_crash_is_clean_and_sigterm_stops_every_process_it_started(tmp_path: Path) -> None:
    """A crash (the supervisor and the hub killed at once) leaves the proxy and services
    behind; the next start clears them and runs every part again; SIGTERM (systemd's stop)
    then stops every process it started."""
    platform = PlatformProcess(tmp_path / "data")
    platform.start()
    try:
        platform.wait_ready()
        start_server(platform)
        instance = str(platform.data_dir.resolve())
        before = {p.pid for p in instance_processes(instance)}
        # A crash: the supervisor and the hub die at once; the proxy, services and servers live on.
        hub_pid = int((platform.data_dir / "jupyterhub.pid").read_text())
        assert platform.proc is not None
        for pid in (platform.proc.pid, hub_pid):
            psutil.Process(pid).kill()
        platform.proc.wait(30)
        orphans = [p for p in instance_processes(instance) if p.pid in before]
        assert orphans, "a crash should leave the proxy and services behind"
        platform.start()
        platform.wait_ready()
        assert not {p.pid for p in instance_processes(instance)} & {p.pid for p in orphans}
        assert "left by an earlier run" in platform.log_path.read_text()
        start_server(platform)  # the hub works after the restart
        cmdlines = names(instance_processes(instance))
        for part in (
            "jupyterhub",
            "configurable-http-proxy",
            "hubforge.hub.governance",
            "mlflow",
            "hubforge-singleuser",
        ):
            assert part in cmdlines, f"{part} not among {cmdlines}"
    finally:
        code = platform.stop(signal.SIGTERM)
    assert code == 0, platform.log_tail()
    assert_all_stopped(platform)


def test_port_taken_by_another_program(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        platform = PlatformProcess(tmp_path / "data")
        platform.config_path.write_text(platform.config_path.read_text().replace(str(platform.port), str(port)))
        result = up_in_foreground(platform)
    assert result.returncode == 2
    assert result.stderr.strip() == f"hubforge: error: hub.port: 127.0.0.1:{port} is in use by another program"
