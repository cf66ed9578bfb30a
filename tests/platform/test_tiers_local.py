"""Tiers on one machine, end to end: the spawn page, forged options, GPUs, the fair-share queue."""

from __future__ import annotations

import html
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.platform import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    HubSession,
    PlatformProcess,
    api,
    derived_environment,
    experiment_runs,
    running,
    wait_for,
)
from harness.server import KernelChannel
from hubforge.hub.launcher import instance_processes

USERS = {
    "alice": {"groups": ["data-scientist"]},
    "bob": {"groups": ["ml-engineer"]},
    "carol": {"groups": ["ml-lead"]},
    "dan": {"groups": ["data-steward"]},
    "erin": {"groups": ["platform-admin"]},
}


@pytest.fixture(scope="module")
def torch_env() -> Iterator[Path]:
    """The environment standing for the PyTorch image: a prefix of its own, readable by every account."""
    folder = Path(tempfile.mkdtemp(prefix="hubforge-env-", dir="/tmp"))
    folder.chmod(0o755)  # mkdtemp's 0700 would keep people's accounts out
    try:
        yield derived_environment(folder / "torch")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def gpu_platform(tmp_path_factory: pytest.TempPathFactory, torch_env: Path) -> Iterator[PlatformProcess]:
    """A platform on a machine that declares one H100 (the training tier's model), with an
    environment for the PyTorch image and none for TensorFlow."""
    local = {
        "gpus": [{"model": "nvidia-h100-80gb", "count": 1}],
        "poll_interval": 1,
        "environments": {"scipy": "platform", "pytorch": str(torch_env)},
    }
    overrides = {"users": USERS, "spawner": {"local": local}}
    yield from running(PlatformProcess(tmp_path_factory.mktemp("gpus") / "data", overrides))


@pytest.fixture(scope="module")
def people(gpu_platform: PlatformProcess) -> Iterator[dict[str, tuple[HubSession, httpx.Client]]]:
    """Each user logged in through the form, with an API token made after login."""
    made = {}
    for user in USERS:
        session = HubSession(gpu_platform.url)
        assert session.login(user).status_code == 302
        made[user] = (session, api(gpu_platform.url, session.new_token(user)))
    yield made
    for session, client in made.values():
        client.close()
        session.close()


def server(client: httpx.Client, user: str) -> dict:
    return client.get(f"/hub/api/users/{user}").json()["servers"].get("", {})


def spawn_page_tiers(session: HubSession) -> set[str]:
    page = session.client.get("/hub/spawn")
    assert page.status_code == 200, page.text[:300]
    return {t for t in ("interactive", "training", "hpo", "finetune") if f'value="{t}"' in page.text}


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("alice", {"interactive", "training", "hpo"}),
        ("bob", {"interactive", "training", "hpo", "finetune"}),
        ("carol", {"interactive", "training", "hpo", "finetune"}),
        ("dan", {"interactive"}),
    ],
)
def test_spawn_page_shows_only_the_users_tiers(people, user: str, expected: set[str]) -> None:
    session, _ = people[user]
    assert spawn_page_tiers(session) == expected


def test_spawn_page_shows_live_gpu_counts(people) -> None:
    page = people["alice"][0].client.get("/hub/spawn").text
    assert "1/1 GPUs free" in page  # training: the declared H100
    assert "no nvidia-a100-40gb on this machine" in page  # hpo's model is not here


@pytest.mark.parametrize(
    ("options", "status", "needle"),
    [
        ({"profile": "finetune"}, 403, "not open to you"),
        ({"profile": "no-such-tier"}, 400, "no-such-tier"),
        ({"profile": "training", "image": "windows"}, 400, "windows"),
        ({"profile": "training", "image": "tensorflow"}, 400, "cannot run on this machine: no environment for it"),
        ({"profile": "training", "gpus": 9}, 400, "allows 1 to 4 GPUs, not 9"),
        ({"profile": "training", "gpus": 2}, 400, "this machine has"),
        ({"profile": "training", "shell": "rm -rf /"}, 400, "unknown option"),
    ],
)
def test_forged_options_are_refused_and_nothing_starts(people, options: dict, status: int, needle: str) -> None:
    _, client = people["alice"]
    saved = saved_options(client, "alice")
    resp = client.post("/hub/api/users/alice/server", json=options)
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["message"]
    assert not server(client, "alice")
    assert saved_options(client, "alice") == saved, "a refused request leaves the saved options as they were"


def data_limit(pid: int) -> int:
    """The soft RLIMIT_DATA of process ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max data size"):
            return int(line.split()[3])
    raise AssertionError(f"no data size limit in /proc/{pid}/limits")


def saved_options(client: httpx.Client, user: str) -> dict | None:
    """The options the hub keeps for the user's next start (the admin page shows them)."""
    servers = client.get(f"/hub/api/users/{user}", params={"include_stopped_servers": "1"}).json()["servers"]
    return servers.get("", {}).get("user_options")


def read_progress(client: httpx.Client, user: str, until: str, timeout: float = 60) -> list[str]:
    """Messages of the spawn progress stream, up to the first one containing ``until``."""
    seen: list[str] = []
    with client.stream("GET", f"/hub/api/users/{user}/server/progress", timeout=timeout) as resp:
        for line in resp.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:]).get("message", "")
                seen.append(message)
                if until in message:
                    return seen
    raise AssertionError(f"no progress message with {until!r} in {seen}")


def test_full_gpu_tier_queues_fairly_and_frees_after_kill_9(gpu_platform, people) -> None:
    (_, alice), (_, bob) = people["alice"], people["bob"]
    assert alice.post("/hub/api/users/alice/server", json={"profile": "training", "gpus": 1}).status_code in (
        201,
        202,
    )
    wait_for(lambda: server(alice, "alice").get("ready"), 120, "alice's training server")
    procs = [
        p
        for p in instance_processes(str(gpu_platform.data_dir.resolve()))
        if "hubforge-singleuser" in " ".join(p.cmdline()) and p.environ().get("JUPYTERHUB_USER") == "alice"
    ]
    assert len(procs) == 1
    env = procs[0].environ()
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["HUBFORGE_TIER"] == "training"
    # The tier's 128G limit (JupyterHub reads G as GiB). Read from /proc: prlimit on a process
    # of another account needs CAP_SYS_RESOURCE, which a container's root may lack.
    assert data_limit(procs[0].pid) == 128 * 1024**3

    # Bob asks for the same GPU: he waits, and the progress page says where and why.
    assert bob.post("/hub/api/users/bob/server", json={"profile": "training"}).status_code == 202
    messages = read_progress(bob, "bob", until="in line for training")
    assert any("1st in line for training" in m and "GPU-hours in the last 7 days" in m for m in messages)
    assert server(bob, "bob").get("pending") == "spawn"
    assert "0 waiting" not in people["carol"][0].client.get("/hub/spawn").text  # the queue is visible

    # Alice's server dies hard; the GPU goes back and Bob gets it.
    procs[0].kill()
    wait_for(lambda: server(bob, "bob").get("ready"), 120, "bob's server after alice's GPU came back")
    wait_for(lambda: not server(alice, "alice"), 60, "the hub to notice alice's server is gone")
    bob.delete("/hub/api/users/bob/server")
    wait_for(lambda: not server(bob, "bob"), 60, "bob's server to stop")
    assert "1/1 GPUs free" in people["alice"][0].client.get("/hub/spawn").text


def test_cancelling_a_queued_spawn_leaves_nothing(people) -> None:
    (_, alice), (_, bob) = people["alice"], people["bob"]
    assert alice.post("/hub/api/users/alice/server", json={"profile": "training"}).status_code in (201, 202)
    wait_for(lambda: server(alice, "alice").get("ready"), 120, "alice's server")
    assert bob.post("/hub/api/users/bob/server", json={"profile": "training"}).status_code == 202
    read_progress(bob, "bob", until="in line")
    assert bob.delete("/hub/api/users/bob/server").status_code in (202, 204)
    wait_for(lambda: not server(bob, "bob"), 60, "bob's queued spawn to be cancelled")
    alice.delete("/hub/api/users/alice/server")
    wait_for(lambda: not server(alice, "alice"), 60, "alice's server to stop")
    assert "1/1 GPUs free" in people["alice"][0].client.get("/hub/spawn").text
    assert "0 waiting" in people["alice"][0].client.get("/hub/spawn").text


def test_spawn_page_in_a_real_browser(gpu_platform, people, artifacts) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    from harness.platform import DEMO_PASSWORD

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1300})
            page.goto(f"{gpu_platform.url}/hub/login")
            page.fill("#username_input", "alice")
            page.fill("#password_input", DEMO_PASSWORD)
            page.click("#login_submit")
            page.goto(f"{gpu_platform.url}/hub/spawn")
            cards = page.locator("#hubforge-tiers .hf-tier")
            assert sorted(cards.evaluate_all("els => els.map(e => e.dataset.tier)")) == [
                "hpo",
                "interactive",
                "training",
            ]
            assert page.locator('[data-tier="training"] [data-role="gpus"]').inner_text() == "1/1 GPUs free"
            assert page.locator('[data-tier="training"] [data-role="queue"]').inner_text() == "0 waiting"
            assert page.locator('[data-tier="hpo"] input[name="profile"]').is_disabled()
            page.screenshot(path=str(artifacts / "spawn-page-alice.png"), full_page=True)
            # Choose training and start: JupyterLab opens on the tier.
            page.check('[data-tier="training"] input[name="profile"]')
            page.click('form input[type="submit"], form button[type="submit"]')
            page.wait_for_url("**/user/alice/lab**", timeout=120_000)
            assert "JupyterLab" in page.title()
        finally:
            browser.close()
    _, alice = people["alice"]
    assert server(alice, "alice").get("ready")
    alice.delete("/hub/api/users/alice/server")
    wait_for(lambda: not server(alice, "alice"), 60, "alice's server to stop")


def test_an_image_without_an_environment_is_shown_disabled_with_the_reason(people) -> None:
    page = html.unescape(people["alice"][0].client.get("/hub/spawn").text)
    assert '<option value="tensorflow" disabled title="no environment for it on this machine">' in page
    assert "TensorFlow (CUDA) (not here: no environment for it on this machine)" in page
    assert '<option value="pytorch" selected>' in page


def test_a_server_runs_its_kernels_in_its_images_environment(gpu_platform, people, torch_env: Path) -> None:
    """Alice's training server (PyTorch image): her kernel is the environment's Python, tracked."""
    _, alice = people["alice"]
    alice.timeout = httpx.Timeout(120)
    started = alice.post("/hub/api/users/alice/server", json={"profile": "training", "gpus": 1})
    assert started.status_code in (201, 202), started.text
    try:
        wait_for(lambda: server(alice, "alice").get("ready"), 120, "alice's training server")
        body = {"path": "torch.ipynb", "name": "torch.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
        made = alice.post("/user/alice/api/sessions", json=body)
        assert made.status_code == 201, made.text
        base = str(alice.base_url).rstrip("/").replace("http", "ws", 1)
        ws = f"{base}/user/alice/api/kernels/{made.json()['kernel']['id']}/channels"
        kernel = KernelChannel(ws, alice.headers["Authorization"])
        try:
            said = kernel.execute("import sys, os; print(sys.prefix); print(os.environ['HUBFORGE_IMAGE'])")
            assert said.stdout.split() == [str(torch_env), "pytorch"], said
            run = re.compile(r"^run: [0-9a-f]{16,}$", re.M)
            wait_for(lambda: run.search(kernel.execute("%hubforge_tracking status").stdout), 60, "its run to open")
        finally:
            kernel.close()
        assert alice.delete(f"/user/alice/api/sessions/{made.json()['id']}").status_code == 204
        runs = wait_for(lambda: experiment_runs(alice, "/Users/alice/torch.ipynb"), 60, "the notebook's run")
        assert len(runs[1]) == 1
    finally:
        alice.delete("/hub/api/users/alice/server")
        wait_for(lambda: not server(alice, "alice"), 90, "alice's server to stop")
