"""The one-machine spawner: each user's server is a local process on a compute tier.

When the platform runs as root (``spawner.local.isolation``: ``auto`` or ``users``),
each person's server and kernels run as their own system account, created on their
first spawn with a private home (see :mod:`~hubforge.spawner_profiles.local.accounts`).
Otherwise every server runs as the platform's own account with its home under the
data folder: no isolation between people, which the platform says wherever it
matters. On Kubernetes every server is its own pod.

The tier catalog is the same as on Kubernetes. GPUs come from the shared
:class:`~hubforge.spawner_profiles.local.gpus.GpuAllocator`: a server gets
specific devices (``CUDA_VISIBLE_DEVICES``), waits in the fair-share queue
when none is free (its place shown on the spawn progress page), and gives
them back when it stops, crashes or is culled.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jupyterhub import orm
from jupyterhub.spawner import SimpleLocalProcessSpawner, set_user_setuid
from sqlalchemy.orm import Session, object_session
from tornado import web
from tornado.httpclient import AsyncHTTPClient
from traitlets import Dict, Float, List, Unicode, default

from hubforge.catalog import SERVER_STOP_GRACE, ChoiceError, ValidatedChoice, fair_share_group, tier_env
from hubforge.contract import IMAGE_ENV, INSTANCE_ENV, KERNEL_PYTHON_ENV, SERVER_PROGRAMS
from hubforge.ports import free_port

from ..tiers import TierSpawnerMixin
from .accounts import Account, AccountError, ensure_account, interpreter, probe_environment
from .environments import Environment, LocalEnvironments, kernel_python_env
from .gpus import Allocation, GpuAllocator, GpuRequest, QueueStatus, Quotas, gpu_env, inventory
from .listeners import Listener, listener_of, port_held
from .spawn_page import render_options_form

__all__ = ["LocalTierSpawner", "fair_share_group", "shared_allocator", "singleuser_command"]

#: One allocator per GPU database in this (hub) process: every spawner shares it.
_ALLOCATORS: dict[str, GpuAllocator] = {}
#: The image environments of this (hub) process, checked once each: every spawner shares them.
_ENVIRONMENTS: dict[tuple[tuple[str, str], ...] | None, LocalEnvironments] = {}

#: Seconds between two reconciliations of the allocator with the hub's servers, from polls.
RECONCILE_INTERVAL = 30.0
_LAST_RECONCILE: dict[int, float] = {}

#: How long a restarted hub keeps trying to ask again for a spawn its crash interrupted in the
#: GPU queue (the hub answers only once every server has been checked).
RESUME_WITHIN_S = 300.0
#: Ports tried for one start: another process may take each chosen port before the server binds it.
PORT_ATTEMPTS = 3
#: Server keys whose interrupted spawn this (hub) process is asking for again.
_RESUMING: dict[str, asyncio.Future[None]] = {}


def singleuser_command() -> list[str]:
    """The single-user server of this Python environment (not whatever is on PATH):
    ``hubforge-singleuser`` (``jupyterhub-singleuser`` that starts faster), else
    ``jupyterhub-singleuser`` where hubforge's script is not installed."""
    here = [os.path.join(os.path.dirname(sys.executable), program) for program in SERVER_PROGRAMS]
    found = next((path for path in here if os.path.exists(path)), None)
    return [found or shutil.which(SERVER_PROGRAMS[-1]) or here[-1]]


def shared_allocator(db_path: str, declared_gpus: list[dict[str, Any]], window_s: float) -> GpuAllocator:
    """The process-wide allocator for ``db_path`` (created on first use)."""
    if db_path not in _ALLOCATORS:
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        _ALLOCATORS[db_path] = GpuAllocator(inventory(declared_gpus), db_path, window_s=window_s)
    return _ALLOCATORS[db_path]


class LocalTierSpawner(TierSpawnerMixin, SimpleLocalProcessSpawner):
    """Start single-user servers (jupyter-server + JupyterLab) as local processes on a tier."""

    instance_marker = Unicode(
        "",
        config=True,
        help="A value put in every server's environment as HUBFORGE_INSTANCE, so that "
        "`hubforge up` can find and stop what an earlier, crashed run left behind.",
    )
    gpu_db = Unicode("", config=True, help="SQLite file of GPU allocations (survives hub restarts).")
    declared_gpus: List[dict[str, Any]] = List(config=True, help="spawner.local.gpus: GPUs of a machine without NVML.")
    fair_share_window = Float(7 * 24 * 3600.0, config=True, help="Seconds of GPU use fair share looks back on.")
    isolation = Unicode(
        "none",
        config=True,
        help="users: each person's server runs as their own system account (needs root); "
        "none: as the hub's own account, home under home_dir_template.",
    )
    account_prefix = Unicode("hubforge-", config=True, help="Prefix of people's system accounts.")
    environments = Dict(
        default_value=None,
        allow_none=True,
        config=True,
        help="spawner.local.environments: image key -> 'platform' or the folder of a Python environment "
        "whose interpreter the server's Python kernels use; images not listed cannot be used here. "
        "None (not configured): every image runs in the platform's own environment.",
    )
    home_root = Unicode("/home", config=True, help="Folder of people's homes (isolation: users).")

    @default("interrupt_timeout")
    def _default_interrupt_timeout(self) -> int:
        # Between asking the server to stop (SIGINT) and terminating it: its kernels end their runs.
        return SERVER_STOP_GRACE

    @default("cmd")
    def _default_cmd(self) -> list[str]:
        return singleuser_command()

    @default("options_form")
    def _default_options_form(self) -> Callable[[Any], Any]:
        return render_options_form

    @default("options_from_form")
    def _default_options_from_form(self) -> Callable[[dict[str, list[str]]], dict[str, Any]]:
        # A default, not a method: ``c.Spawner.options_from_form`` (a callable, "simple") still wins.
        return self.tier_options_from_form

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allocation: Allocation | None = None
        self._events: list[dict[str, Any]] = []
        self._events_changed = asyncio.Event()
        self._acquiring: asyncio.Task[Allocation] | None = None
        self._start_began = 0.0  # time.monotonic() when start() began
        self.account: Account | None = None

    # -- who may use what -------------------------------------------------------------------------

    @property
    def allocator(self) -> GpuAllocator:
        """This machine's shared GPU allocator."""
        db = self.gpu_db or os.path.join(os.path.dirname(self.home_dir_template), "gpus.sqlite")
        return shared_allocator(db, list(self.declared_gpus), self.fair_share_window)

    @property
    def local_environments(self) -> LocalEnvironments:
        """This machine's image environments (shared by the hub's spawners)."""
        declared = None if self.environments is None else dict(self.environments)
        key = None if declared is None else tuple(sorted(declared.items()))
        if key not in _ENVIRONMENTS:
            _ENVIRONMENTS[key] = LocalEnvironments(declared, _platform_python())
        return _ENVIRONMENTS[key]

    def image_unavailable(self, image: str) -> str | None:
        """Why ``image`` cannot run on this machine (the spawn page shows it), or None."""
        return self.local_environments.unavailable(image)

    def tier_options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        """The spawn page's fields -> ``{"profile", "image", "gpus"}`` (checked later, like the API's)."""
        slug = (formdata.get("profile") or [""])[0]
        options: dict[str, Any] = {"profile": slug}
        for key in ("image", "gpus"):
            values = formdata.get(f"{key}_{slug}") or [""]
            if values[0] != "":
                options[key] = values[0]
        return options

    def gpu_request(self, choice: ValidatedChoice) -> tuple[GpuRequest, Quotas]:
        """What to ask the allocator for this choice, and the quotas that apply."""
        tier = choice.tier
        group = fair_share_group(self.user_groups(), tier, self.user.name)
        request = GpuRequest(
            server_key=self.server_key,
            user=self.user.name,
            group=group,
            tier=tier.slug,
            gpus=choice.gpus,
            model=tier.resources.model if choice.gpus else None,
            mig_profile=tier.resources.mig_profile if choice.gpus else None,
        )
        return request, Quotas(group_gpus=tier.quota.get(group), user_servers=self.catalog.max_servers_per_user)

    def check_choice(self, choice: ValidatedChoice) -> ValidatedChoice:
        """The catalog's choice checked against this machine: an image it can run, GPUs it has.

        The hub starts only a server it believes stopped, so an allocation still held
        under this server's name is stale (a crash, a database reset) and is freed first
        rather than refusing the start.
        """
        choice = self._runnable_here(choice, asked=bool((self.user_options or {}).get("image")))
        self._free_stale_allocation()
        self.allocator.check(*self.gpu_request(choice))
        return choice

    def check_user_options(self) -> ValidatedChoice:
        """The request checked against the catalog and the machine; HTTPError 4xx if refused.

        A request without a tier gets the default one, and the hub's record of the
        server says which.
        """
        choice = super().check_user_options()
        if "profile" not in (self.user_options or {}):
            accepted = {**(self.user_options or {}), "profile": choice.tier.slug}
            setattr(self, "user_options", accepted)  # noqa: B010 (a traitlet mypy cannot type here)
            self._accepted_options = dict(accepted)
        return choice

    def _runnable_here(self, choice: ValidatedChoice, asked: bool) -> ValidatedChoice:
        """The choice if its image has an environment here; the tier's first image that has one
        when none was asked for; else ChoiceError saying why and what can run."""
        why = self.image_unavailable(choice.image_key)
        if why is None:
            return choice
        usable = [image for image in choice.tier.images if self.image_unavailable(image.key) is None]
        if usable and not asked:
            return ValidatedChoice(choice.tier, usable[0].key, usable[0].image, choice.gpus)
        here = ", ".join(image.key for image in usable) or "none"
        raise ChoiceError(
            f"image {choice.image_key!r} cannot run on this machine: {why} (images of tier "
            f"{choice.tier.slug!r} that can: {here})"
        )

    def image_environment(self) -> Environment | None:
        """The Python environment of the chosen image (not ``environment``, JupyterHub's env trait)."""
        return self.local_environments.environment(self.tier_choice.image_key) if self.tier_choice else None

    # -- allocations follow the hub's view of its servers ------------------------------------------

    @property
    def server_key(self) -> str:
        """This server's key in the GPU allocator."""
        return f"{self.user.name}/{self.name}"

    def _free_stale_allocation(self) -> None:
        if self._acquiring is not None or self.allocation is not None:
            return  # this spawner's own, live request
        if self.server_key in self.allocator.allocations():
            self.log.warning("Freeing the stale GPU allocation of %s before starting it", self._log_name)
            self.allocator.release(self.server_key)

    def hub_servers(self) -> set[str] | None:
        """Allocator keys of every server the hub's database says is starting or running.

        None when this spawner is not attached to a hub database (then nothing is reconciled).
        """
        session: Session | None = object_session(self.orm_spawner) if self.orm_spawner is not None else None
        if session is None:
            return None
        rows = (
            session.query(orm.User.name, orm.Spawner.name)
            .join(orm.Spawner.user)
            .filter(orm.Spawner.server_id.isnot(None))
        )
        return {f"{user}/{name or ''}" for user, name in rows}

    def reconcile_allocations(self) -> list[str]:
        """Free the GPUs of servers the hub no longer has (stopped while it was away, a reset db)."""
        alive = self.hub_servers()
        if alive is None:
            return []
        freed = self.allocator.reconcile(alive)
        for key in freed:
            self.log.warning("Freed the GPU allocation of %s: the hub has no such server running", key)
        return freed

    # -- start, progress, stop ----------------------------------------------------------------------

    def _announce(self, message: str, progress: int = 10) -> None:
        self._events.append({"progress": progress, "message": message})
        self._events_changed.set()

    async def _acquire(self, choice: ValidatedChoice) -> Allocation:
        request, quotas = self.gpu_request(choice)
        resume = json.dumps(self.user_options or {})  # what a restarted hub asks for again
        async with aclosing(self.allocator.acquire(request, quotas, resume)) as steps:
            async for step in steps:
                if isinstance(step, QueueStatus):
                    self._announce(step.message)
                    continue
                return step
        raise RuntimeError("the GPU allocator ended without an allocation")  # pragma: no cover

    async def start(self) -> Any:
        """Wait for GPUs in the fair-share queue, then start the server with them."""
        self._events.clear()
        self._start_began = time.monotonic()
        choice = self.tier_choice or self.check_user_options()
        self._announce(f"Requesting {choice.tier.display_name}: {_describe(choice)}", 5)
        self._acquiring = asyncio.ensure_future(self._acquire(choice))
        try:
            self.allocation = await self._acquiring
            self._apply_tier(choice)
            self._announce(f"Starting your server on {choice.tier.display_name}{_gpu_words(self.allocation)}", 50)
        finally:
            self._acquiring = None
        try:
            if self.isolating:
                await self._prepare_account()
            url = await self._start_listening()
        except BaseException:
            self._release("start failed")
            self.audit_server("spawn", "failure")
            raise
        self.audit_server("spawn", "success")
        return url

    async def _start_listening(self) -> Any:
        """Start the server process; with the platform's own server program, return only once
        that process listens on its port (the hub takes any answer from the port as the server).

        A port that went to another socket before the server bound it is given up for a new
        one: another process's listener, or a connection whose local end it became (the server
        exits then, as jupyter-server does when its port is taken). Commands set in config (a
        script, a shell line) may never listen: they start as JupyterHub's spawners start them.
        """
        for _attempt in range(PORT_ATTEMPTS):
            if not self.port:  # type: ignore[has-type]  # a trait JupyterHub declares untyped
                # Outside the ephemeral range (JupyterHub's ``random_port`` is inside it):
                # no outgoing connection can take the port while the server imports.
                self.port = free_port(str(self.ip or ""))
            ip, port = await super().start()
            if not self._serves_http():
                return ip, port
            if await self._wait_listening(port) is not Listener.OTHER:
                return ip, port
            self.log.warning(
                "Port %i of %s was taken by another socket before the server bound it; trying another",
                port,
                self._log_name,
            )
            await self._kill_process()
            self.port = 0  # a new free one is chosen
        raise web.HTTPError(503, f"hubforge: {PORT_ATTEMPTS} ports in a row were taken by other processes; try again")

    def _serves_http(self) -> bool:
        """Whether the command is the platform's single-user server, run directly."""
        return (
            bool(self.cmd)
            and os.path.basename(self.cmd[0]) in SERVER_PROGRAMS
            and not self.shell_cmd
            and not self.popen_kwargs.get("shell")
        )

    async def _wait_listening(self, port: int) -> Listener:
        """OURS once the server listens on its port; OTHER when it exits with the port held by
        another socket; an error naming the status if it exits otherwise. After ``http_timeout``,
        or short of the hub's ``start_timeout`` for this whole start (a long wait for GPUs took
        most of it), the hub's own wait takes over.

        Another process listening on the port number while the server still imports is no
        verdict: on another address (``::1`` beside ``127.0.0.1``) it leaves the server's bind
        alone, and on the same one the server cannot bind and exits, which is the verdict."""
        deadline = min(time.monotonic() + self.http_timeout, self._start_began + self.start_timeout - 1)
        while time.monotonic() < deadline:
            status = self.proc.poll()
            listener = await asyncio.to_thread(listener_of, port, self.pid)
            if listener is Listener.OURS:
                return listener
            if status is not None:
                if status != 0 and await asyncio.to_thread(port_held, port):
                    # It could not bind: the port went to another socket since it was chosen (a
                    # connection's local end, or a listener), as jupyter-server exits then.
                    return Listener.OTHER
                self.log.error("The server of %s exited with status %s as it started", self._log_name, status)
                raise web.HTTPError(500, f"hubforge: your server exited with status {status} as it started")
            if listener is Listener.UNKNOWN:
                return listener
            await asyncio.sleep(0.1)
        return Listener.NOBODY

    async def _kill_process(self) -> None:
        """Kill the server's process group (started as a session of its own) and reap it."""
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait)

    @property
    def isolating(self) -> bool:
        """Whether this server runs as its person's own system account."""
        return self.isolation == "users"

    async def _prepare_account(self) -> None:
        """The person's account, made on first spawn; refused if it cannot run the platform's Python."""
        try:
            self.account = await asyncio.to_thread(ensure_account, self.account_prefix, self.user.name, self.home_root)
            if self.account.created:
                self._announce(f"Created your system account {self.account.name}", 55)
                self.log.info("Created the system account %s for %s", self.account.name, self.user.name)
            await asyncio.to_thread(probe_environment, self.account, list(self.cmd))
            environment = self.image_environment()
            if environment is not None and not environment.own:
                await asyncio.to_thread(probe_environment, self.account, [environment.python])
        except AccountError as exc:
            self.log.error("Cannot start %s: %s", self._log_name, exc)
            raise web.HTTPError(500, f"hubforge: {exc}") from exc

    def _apply_tier(self, choice: ValidatedChoice) -> None:
        tier = choice.tier
        self.mem_limit = tier.resources.mem_limit
        self.cpu_limit = tier.resources.cpu_limit
        env: dict[str, Any] = dict(self.environment)  # type: ignore[has-type]
        env.update(gpu_env(self.allocation) if self.allocation else {})
        # Tracking on or off, always: a reused spawner must not keep the last tier's switch.
        env.update({**tier_env(tier), IMAGE_ENV: choice.image_key})
        env.pop(KERNEL_PYTHON_ENV, None)  # a reused spawner must not keep the last image's
        environment = self.local_environments.environment(choice.image_key)
        env.update(kernel_python_env(environment) if environment else {})
        self.environment = env

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """Spawn progress: queue position and reason while waiting, then start-up steps."""
        seen = 0
        while True:
            while seen < len(self._events):
                yield self._events[seen]
                seen += 1
            if self._acquiring is None and self.allocation is not None:
                return
            self._events_changed.clear()
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._events_changed.wait(), timeout=1)

    async def stop(self, now: bool = False) -> None:
        """Stop the server (or leave the queue) and give its GPUs back.

        A spawn still waiting in the GPU queue has no process: it leaves the queue,
        and nothing is signalled (JupyterHub's stop would signal pid 0, the hub's own
        process group).
        """
        acquiring = self._acquiring
        if acquiring is not None:
            acquiring.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await acquiring
            self._acquiring = None
        if self.pid:
            await super().stop(now=now)
            self.audit_server("stop", "success")
        self._release("stopped")

    async def _signal(self, sig: int) -> bool:
        """Signal the server's process; never pid 0 or below (a process group, or every process)."""
        if not self.pid or self.pid <= 0:
            return False
        alive: bool = await super()._signal(sig)
        return alive

    async def poll(self) -> int | None:
        """Whether the server runs; a dead one's GPUs go back, an overdue one is stopped.

        Every ``RECONCILE_INTERVAL`` seconds a poll also frees allocations of servers
        the hub no longer has.
        """
        if self._acquiring is not None:
            return None  # still queued: nothing to poll yet
        if not self.pid and self._interrupted_in_queue():
            return 0  # the hub stops it as "stopped while the hub was down"; it is asked for again
        now = time.monotonic()
        if now - _LAST_RECONCILE.get(id(self.allocator), 0.0) >= RECONCILE_INTERVAL:
            _LAST_RECONCILE[id(self.allocator)] = now
            self.reconcile_allocations()
        status: int | None = await super().poll()
        if status is None and self._past_lifetime():
            self.log.info("Stopping %s: the tier's maximum lifetime has passed", self._log_name)
            await super().stop(now=True)
            status = 0
        if status is not None:
            self._release("exited")
        return status

    def _interrupted_in_queue(self) -> bool:
        """Whether this server's spawn was waiting for GPUs when the hub died; if so, ask the
        hub for it again (in the background, once the hub answers), keeping its place."""
        key = self.server_key
        if key in _RESUMING:
            return True
        waiting = self.allocator.interrupted(key)
        if waiting is None:
            return False
        _RESUMING[key] = asyncio.ensure_future(self._resume(waiting.resume))
        return True

    async def _resume(self, resume: str) -> None:
        """Ask the hub, as this server's person (a token for their servers only, revoked after),
        to spawn it again with the options it was asked for with; the allocator keeps its place."""
        key = self.server_key
        try:
            options = json.loads(resume)
            if not isinstance(options, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self.log.warning("Not asking again for the spawn of %s: its options do not read (%s)", self._log_name, exc)
            self.allocator.forget_interrupted(key)
            _RESUMING.pop(key, None)
            return
        token = self.user.new_api_token(
            note="hubforge: a queued spawn asked for again after a hub restart",
            expires_in=int(RESUME_WITHIN_S) + 60,
            scopes=[f"servers!user={self.user.name}"],
        )
        try:
            answer = await self._ask_hub(token, options)
        finally:
            _RESUMING.pop(key, None)
            found = orm.APIToken.find(self.user.db, token)
            if found is not None:
                self.user.db.delete(found)
                self.user.db.commit()
        if answer in (201, 202):
            self.log.info("Asked again for the spawn of %s, which waited for GPUs when the hub stopped", self._log_name)
        else:
            self.log.warning("The spawn of %s, interrupted in the GPU queue, was refused (%s)", self._log_name, answer)
            self.allocator.forget_interrupted(key)

    async def _ask_hub(self, token: str, options: dict[str, Any]) -> int | str:
        """POST the spawn to the hub's REST API until it answers (it answers once it has started)."""
        url = f"{self.hub.api_url.rstrip('/')}/users/{quote(self.user.name)}/servers/{quote(self.name)}"
        headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
        deadline = time.monotonic() + RESUME_WITHIN_S
        while True:
            try:
                answer = await AsyncHTTPClient().fetch(
                    url, method="POST", body=json.dumps(options), headers=headers, raise_error=False
                )
            except OSError as exc:  # not listening yet
                code: int | str = f"the hub does not answer: {exc}"
            else:
                body = answer.body or b""
                if answer.code in (201, 202):
                    return answer.code
                if answer.code != 400 or b"pending" not in body:  # only "still stopping it" is worth a retry
                    return f"{answer.code} {body.decode(errors='replace')}"
                code = answer.code
            if time.monotonic() > deadline:
                return code
            await asyncio.sleep(1.0)

    def _past_lifetime(self) -> bool:
        lifetime = self.tier_choice.tier.max_lifetime if self.tier_choice else 0
        started = self.orm_spawner.started if self.orm_spawner is not None else None
        return bool(lifetime and started and time.time() - started.timestamp() > lifetime)

    def _release(self, why: str) -> None:
        released = self.allocator.release(self.server_key)
        if released is not None and released.gpus:
            self.log.info("Released %d GPU(s) of %s (%s)", len(released.gpus), self._log_name, why)
        self.allocation = None

    # -- the process ----------------------------------------------------------------------------------

    def get_args(self) -> list[str]:
        """jupyter-server refuses root without ``--allow-root``."""
        args: list[str] = super().get_args()  # the tier mixin's: a fresh list each call
        if not self.isolating and hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--allow-root")
        return args

    def get_env(self) -> dict[str, Any]:
        """The server's environment, marked with the platform instance it belongs to."""
        env: dict[str, Any] = super().get_env()
        if self.instance_marker:
            env[INSTANCE_ENV] = self.instance_marker
        return env

    def user_env(self, env: dict[str, Any]) -> dict[str, Any]:
        """HOME and SHELL of the account the server runs as; USER its person's hub name."""
        if self.account is None:
            return dict(super().user_env(env))
        # USER and LOGNAME name the person as the hub knows them: what MLflow records as a run's
        # mlflow.user (getpass reads them) must be their hub name; the system shows the account.
        env.update(USER=self.user.name, LOGNAME=self.user.name, HOME=self.account.home)
        env["SHELL"] = self.account.shell or "/bin/bash"
        return env

    def make_preexec_fn(self, name: str) -> Callable[[], None]:
        """Become the person's account (or create the shared home), then cap the server's data
        segment at the tier's memory limit; files it makes are private to it."""
        parent = set_user_setuid(self.account.name) if self.account is not None else super().make_preexec_fn(name)
        limit = int(self.mem_limit or 0)
        isolating = self.account is not None

        def preexec() -> None:
            parent()
            if isolating:
                os.umask(0o077)
            if limit:
                # RLIMIT_DATA counts heap and anonymous mappings: what a runaway kernel grows.
                resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

        return preexec

    # -- state across hub restarts -----------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """The process id (JupyterHub's) and the tier choice, so a restarted hub can poll it."""
        state: dict[str, Any] = super().get_state()
        if self.tier_choice is not None:
            state["hubforge_choice"] = {
                "profile": self.tier_choice.tier.slug,
                "image": self.tier_choice.image_key,
                "gpus": self.tier_choice.gpus,
            }
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the tier choice (lifetime, culling) after a hub restart."""
        super().load_state(state)
        saved = state.get("hubforge_choice")
        if saved and self.tier_catalog is not None:
            tier = next((t for t in self.catalog.tiers if t.slug == saved.get("profile")), None)
            image = next((i for i in tier.images if i.key == saved.get("image")), None) if tier else None
            if tier and image:
                self.tier_choice = ValidatedChoice(tier, image.key, image.image, int(saved.get("gpus", 0)))

    def clear_state(self) -> None:
        """Forget the choice along with the process."""
        super().clear_state()
        self.tier_choice = None


def _platform_python() -> str:
    """The Python the servers run (the interpreter of their single-user server's script)."""
    return interpreter(singleuser_command()[0])


def _describe(choice: ValidatedChoice) -> str:
    gpus = f"{choice.gpus} GPU{'s' if choice.gpus != 1 else ''}" if choice.gpus else "no GPU"
    return f"{choice.image_key} image, {gpus}"


def _gpu_words(allocation: Allocation | None) -> str:
    if allocation is None or not allocation.gpus:
        return ""
    return " with GPU " + ", ".join(g.visible_id for g in allocation.gpus)
