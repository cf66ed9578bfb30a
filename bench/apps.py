"""Opening a published app (issue 14): the gallery's Open to the app's first render, against
plain Voila rendering the same notebook, in the same server, in the same run.

A real apps service (behind the tests' fake hub) holds alice's app; a real jupyter-server
with hubforge's extension and Voila is frank's server. **ours**: ``GET
/hubforge/apps/alice/<app>`` (the server fetches the frozen notebook from the apps
service with frank's token, keeps it, redirects) and Voila's page it redirects to, whole;
**baseline**: ``GET /voila/render/<the same notebook>`` straight away. Both start a kernel
and run the notebook; rounds alternate (ours, plain, plain, ours, ...). The first open
of each round writes the app's copy, later ones find it unchanged.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.report import Result
from harness.apps import notebook, serving_apps
from harness.server import Server

__all__ = ["run"]

#: Opens per side and round (each starts and stops a kernel: about a second).
OPENS = 6


def _timed(server: Server, path: str) -> float:
    started = time.perf_counter()
    page = server.http.get(path, follow_redirects=True, timeout=120)
    took = (time.perf_counter() - started) * 1000
    if page.status_code != 200 or "region eu" not in page.text:
        raise RuntimeError(f"{path} did not render: {page.status_code} {page.text[:200]}")
    return took


def run(repeat: int) -> list[Result]:
    """ms from Open to the rendered app, vs Voila rendering the notebook directly."""
    ours: list[float] = []
    plain: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hubforge-bench-apps-") as tmp:
        root = Path(tmp)
        with serving_apps(f"sqlite:///{root / 'apps.sqlite'}", root / "files") as apps:
            app = notebook("Bench")
            app["cells"][2]["source"] = "print('region', region)"
            with apps.client("alice-token") as alice:
                alice.post("api/apps", json={"name": "bench", "notebook": app, "share": ["analyst"]}).raise_for_status()
            env = {
                "JUPYTERHUB_USER": "frank",
                "JUPYTERHUB_API_TOKEN": "frank-token",
                "HUBFORGE_APPS_URL": apps.url + "/services/apps",
                "HUBFORGE_TRACKING": "off",
            }
            server = Server(root / "frank", env)
            try:
                _timed(server, "/hubforge/apps/alice/bench")  # warm-up: the copy, Voila's templates
                direct = "/voila/render/hubforge-apps/alice/bench.ipynb"
                _timed(server, direct)
                for _ in range(repeat):
                    round_ours, round_plain = [], []
                    for step in range(OPENS):
                        for side in ("ours", "plain") if step % 2 == 0 else ("plain", "ours"):
                            if side == "ours":
                                round_ours.append(_timed(server, "/hubforge/apps/alice/bench"))
                            else:
                                round_plain.append(_timed(server, direct))
                    ours.append(sorted(round_ours)[len(round_ours) // 2])
                    plain.append(sorted(round_plain)[len(round_plain) // 2])
            finally:
                server.stop()
    return [Result("app open -> first render", "ms", ours, plain, "Voila on the same notebook")]
