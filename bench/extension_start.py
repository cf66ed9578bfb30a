"""jupyter-server start time with hubforge's server extension against without it.

Both sides are the same ``jupyter-server`` command, on a free port with a fresh
root and config folder, differing only in
``--ServerApp.jpserver_extensions=hubforge.server_extension=True|False`` (so the
figure holds whether or not the package's config file is installed). Timed from
process start until ``/api/status`` answers; the sides alternate. Target (issue 4):
at most 200 ms added.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.report import Result
from harness.platform import free_port

__all__ = ["run", "time_to_status"]

TOKEN = "bench-token"


def _status_ok(url: str) -> bool:
    try:
        return httpx.get(url, headers={"Authorization": f"token {TOKEN}"}, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def time_to_status(tmp: Path, enabled: bool, timeout: float = 180) -> float:
    """Seconds from starting ``jupyter-server`` until ``/api/status`` answers; stops it again."""
    root = Path(tempfile.mkdtemp(dir=tmp))
    port = free_port()
    cmd = [
        str(Path(sys.executable).with_name("jupyter-server")),
        f"--port={port}",
        "--ip=127.0.0.1",
        "--no-browser",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.jpserver_extensions=hubforge.server_extension={enabled}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / "config"), "JUPYTER_RUNTIME_DIR": str(root / "run")}
    url = f"http://127.0.0.1:{port}/api/status"
    start = time.monotonic()
    log = open(root / "server.log", "wb")  # noqa: SIM115 -- closed in finally, after the server
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while not _status_ok(url):
            if proc.poll() is not None or time.monotonic() - start > timeout:
                tail = (root / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"jupyter-server did not answer (enabled={enabled}):\n{tail}")
            time.sleep(0.01)
        return time.monotonic() - start
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()


def run(repeat: int) -> list[Result]:
    """jupyter-server start, with the extension against without, alternating; milliseconds."""
    ours: list[float] = []
    plain: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hubforge-bench-ext-") as tmp:
        time_to_status(Path(tmp), enabled=False)  # warm the file cache for both sides
        for _ in range(repeat):
            ours.append(1000 * time_to_status(Path(tmp), enabled=True))
            plain.append(1000 * time_to_status(Path(tmp), enabled=False))
    return [Result("jupyter-server start (extension)", "ms", ours, plain, "the same server without it")]


if __name__ == "__main__":
    from bench.report import print_table

    print_table(run(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
