"""One system account per person: what alice's notebook can and cannot reach, through the hub.

The platform runs as root (as on a machine set up for a team), so alice's and
bob's servers run as their own accounts. Alice logs in, starts her server and
runs cells over JupyterLab's REST and websocket protocol, the way a curious
colleague would: she tries bob's home, the environments of bob's kernel, the
hub and MLflow (their tokens), and the platform's data folder with its
databases and keys. Every one is refused by the operating system. What she
makes is hers, and MLflow still stores and serves her artifacts.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from harness.corpus import Lab, artifacts, code_of, corpus, mlflow_runs
from harness.platform import NO_ACCOUNTS, HubSession, PlatformProcess, api, wait_for
from harness.server import KernelChannel

pytestmark = pytest.mark.skipif(
    bool(NO_ACCOUNTS), reason=f"people cannot have accounts of their own here: {NO_ACCOUNTS}"
)

#: Run in alice's kernel: try each path, say what happened (never raises).
PROBE = """
import json, os
def attempt(path):
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(64)
        return "read"
    except PermissionError:
        return "denied"
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return type(exc).__name__
print(json.dumps({p: attempt(p) for p in json.loads(PATHS)}))
"""

WHO = """
import json, os, pathlib
pathlib.Path("mine.txt").write_text("alice's")
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "home": os.environ["HOME"], "cwd": os.getcwd(),
                  "groups": os.getgroups(), "file": os.stat("mine.txt").st_mode & 0o777,
                  "file_uid": os.stat("mine.txt").st_uid, "user": os.environ.get("USER")}))
"""

ARTIFACT = """
import mlflow
client = mlflow.MlflowClient()
experiment = mlflow.set_experiment("/Users/alice/isolation-check")
run = client.create_run(experiment.experiment_id)
client.log_text(run.info.run_id, "written as alice's account", "check/hello.txt")
print(open(client.download_artifacts(run.info.run_id, "check/hello.txt")).read())
"""


def _server_up(http: httpx.Client, user: str) -> None:
    started = http.post(f"/hub/api/users/{user}/server")
    assert started.status_code in (201, 202), started.text
    wait_for(lambda: http.get(f"/hub/api/users/{user}").json()["servers"].get("", {}).get("ready"), 180, user)


@pytest.fixture
def people(platform: PlatformProcess) -> Iterator[dict[str, httpx.Client]]:
    """Alice and bob logged in with tokens, each with their default server running."""
    clients: dict[str, httpx.Client] = {}
    sessions = []
    try:
        for user in ("alice", "bob"):
            session = HubSession(platform.url)
            sessions.append(session)
            assert session.login(user).status_code == 302
            http = api(platform.url, session.new_token(user, note="isolation"))
            http.timeout = httpx.Timeout(120)
            clients[user] = http
            _server_up(http, user)
        yield clients
    finally:
        for user, http in clients.items():
            http.delete(f"/hub/api/users/{user}/server")
            wait_for(lambda h=http, u=user: not h.get(f"/hub/api/users/{u}").json()["servers"], 90, f"{user} to stop")
            http.close()
        for session in sessions:
            session.close()


def _open(http: httpx.Client, user: str, name: str) -> tuple[KernelChannel, int]:
    """A notebook session in ``user``'s server; its kernel's channel and process id."""
    body = {"path": name, "name": name, "type": "notebook", "kernel": {"name": "python3"}}
    made = http.post(f"/user/{user}/api/sessions", json=body)
    assert made.status_code == 201, made.text
    base = str(http.base_url).rstrip("/").replace("http", "ws", 1)
    kernel = KernelChannel(
        f"{base}/user/{user}/api/kernels/{made.json()['kernel']['id']}/channels", http.headers["Authorization"]
    )
    pid = int(kernel.execute("import os; print(os.getpid())").stdout)
    return kernel, pid


#: Run in alice's kernel: try to bind each of PORTS on the loopback address; say what happened.
BIND = """
import json, socket
def bind(port):
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return "bound"
        except OSError as exc:
            return type(exc).__name__
print(json.dumps({port: bind(port) for port in PORTS}))
"""


def _internal_ports(platform: PlatformProcess) -> set[int]:
    """Ports the platform's own processes (not people's) listen on, but the public one."""
    ours = set()
    for proc in psutil.process_iter(["environ", "uids"]):
        env = proc.info.get("environ") or {}
        if env.get("HUBFORGE_INSTANCE") == str(platform.data_dir) and proc.info["uids"].real == os.getuid():
            ours.add(proc.pid)
    listening = psutil.net_connections(kind="tcp")
    public = int(platform.url.rsplit(":", 1)[1])
    return {c.laddr.port for c in listening if c.status == psutil.CONN_LISTEN and c.pid in ours} - {public}


def _platform_pid(platform: PlatformProcess, word: str) -> int:
    """The process of the platform whose command line has ``word`` (the hub, MLflow's server)."""
    for proc in psutil.process_iter(["cmdline", "environ"]):
        env = proc.info.get("environ") or {}
        if env.get("HUBFORGE_INSTANCE") == str(platform.data_dir) and word in " ".join(proc.info["cmdline"] or []):
            return proc.pid
    raise AssertionError(f"no process of the platform runs {word}")


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_alices_notebook_reaches_nothing_that_is_not_hers(
    platform: PlatformProcess, people: dict[str, httpx.Client]
) -> None:
    whoami = people["alice"].get("/services/governance/api/whoami").json()
    assert whoami["isolation"] == {"mode": "users", "words": "each person's notebooks run as their own system account"}
    alice_account, bob_account = platform.account("alice"), platform.account("bob")
    assert alice_account and bob_account and alice_account.pw_uid != bob_account.pw_uid
    for account in (alice_account, bob_account):
        home = os.stat(account.pw_dir)
        assert (home.st_uid, stat.S_IMODE(home.st_mode)) == (account.pw_uid, 0o700), account.pw_name

    bob, bob_kernel = _open(people["bob"], "bob", "secrets.ipynb")
    bob.execute("import os; os.environ['BOB_SECRET'] = 'hunter2'; open('notes.txt', 'w').write('bob only')")
    alice, alice_kernel = _open(people["alice"], "alice", "curious.ipynb")
    try:
        # Every process of a person runs as their account: the server and its kernels.
        for pid, account in ((alice_kernel, alice_account), (bob_kernel, bob_account)):
            process = psutil.Process(pid)
            assert process.uids().real == process.uids().effective == account.pw_uid
            assert process.parent().uids().real == account.pw_uid  # the person's jupyter-server

        who = json.loads(alice.execute(WHO).stdout)
        assert who["uid"] == alice_account.pw_uid and who["gid"] == alice_account.pw_gid
        assert who["home"] == who["cwd"] == alice_account.pw_dir
        assert who["user"] == "alice"  # what MLflow records as the person: her hub name
        assert who["file_uid"] == alice_account.pw_uid and who["file"] == 0o600  # private by default
        assert 0 not in who["groups"]
        assert Path(alice_account.pw_dir, "mine.txt").stat().st_uid == alice_account.pw_uid

        data = platform.data_dir
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        targets = [
            bob_account.pw_dir,
            f"{bob_account.pw_dir}/notes.txt",
            f"/proc/{bob_kernel}/environ",
            f"/proc/{psutil.Process(bob_kernel).parent().pid}/environ",
            f"/proc/{_platform_pid(platform, 'jupyterhub')}/environ",
            f"/proc/{_platform_pid(platform, 'mlflow')}/environ",
            f"/proc/{_platform_pid(platform, 'configurable-http-proxy')}/environ",  # the proxy's API token
            f"/proc/{platform.proc.pid}/environ" if platform.proc else "/proc/1/environ",
            str(data),
            *(str(p) for p in data.iterdir()),
            *(str(data / name) for name in ("jupyterhub.sqlite", "governance.sqlite", "mlflow.sqlite")),
            str(data / "jupyterhub_cookie_secret"),
            str(platform.config_path.parent),
        ]
        outcome = json.loads(alice.execute(f"PATHS = {json.dumps(targets)!r}\n" + PROBE).stdout)
        assert set(outcome.values()) == {"denied"}, {p: o for p, o in outcome.items() if o != "denied"}
        # The MLflow server's database URL is not on its command line (which anyone may read).
        cmdline = " ".join(psutil.Process(_platform_pid(platform, "mlflow")).cmdline())
        assert "--backend-store-uri" not in cmdline and "sqlite:" not in cmdline, cmdline

        # The ports the hub, the proxy's API and the services listen on are privileged: her
        # process cannot take one over while its service restarts (and be handed its requests).
        internal = _internal_ports(platform)
        assert len(internal) >= 4, internal  # the hub, the proxy's API, governance, MLflow, ...
        binds = alice.execute(f"PORTS = {sorted(internal)!r}\n" + BIND).stdout
        assert set(json.loads(binds).values()) == {"PermissionError"}, binds

        # MLflow still stores and serves what her account logs through the proxy.
        said = alice.execute(ARTIFACT)
        assert said.stdout.strip() == "written as alice's account", said
    finally:
        alice.close()
        bob.close()


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_a_tracked_notebook_runs_as_her_account(platform: PlatformProcess, people: dict[str, httpx.Client]) -> None:
    """Tracking works as her account: the spool and the notebook are hers, the run ends with its snapshot."""
    alice = platform.account("alice")
    assert alice is not None
    lab = Lab(people["alice"])
    path = "isolation/pandas_analysis.ipynb"  # not the corpus test's folder: its experiments stay its own
    assert people["alice"].put("/user/alice/api/contents/isolation", json={"type": "directory"}).is_success
    saved = people["alice"].put(
        f"/user/alice/api/contents/{path}", json={"type": "notebook", "content": corpus("pandas_analysis.ipynb")}
    )
    assert saved.status_code in (200, 201), saved.text
    session, kernel = lab.open(path)
    try:
        for code in code_of("pandas_analysis.ipynb"):
            assert kernel.execute(code).status == "ok"
        assert int(kernel.execute("import os; print(os.getuid())").stdout) == alice.pw_uid
    finally:
        kernel.close()
    lab.shut_down(session, "session")
    runs = wait_for(lambda: mlflow_runs(people["alice"], f"/Users/alice/{path}"), 120, "the notebook's run to end")
    assert [r["info"]["status"] for r in runs] == ["FINISHED"]
    assert artifacts(people["alice"], runs[0]) == ["environment", "notebook"]
    home = platform.home("alice")
    spool = home / ".local" / "share" / "jupyter" / "hubforge" / "spool"
    owners = {p.stat().st_uid for p in (home / path, spool, *spool.rglob("*"))}
    assert owners == {alice.pw_uid}
