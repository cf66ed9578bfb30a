"""``hubforge features apply``: write the demo repository, generate its data, apply and materialize it.

The repository lives in ``<data_dir>/features/``, the platform's private data folder.
Each run is a list of steps, each reported on one line; :func:`~hubforge.features.repo.plan`
decides which of them have anything to do, so a second run changes nothing and, with
nothing to do, never imports Feast. Any failure is one :class:`FeaturesError` line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

from hubforge.config import PlatformConfig

from .catalog import CATALOG_FILE
from .repo import (
    DATA_VERSION,
    DEFAULT_PROJECT,
    DEFINITIONS,
    FILES,
    FeaturesError,
    Plan,
    State,
    definitions_text,
    digest,
    feature_store_yaml,
    online_store,
    plan,
    redacted,
)

__all__ = ["Outcome", "apply_demo", "features_dir"]

#: Where the repository's files are, under the data folder.
FEATURES_DIR = "features"
STATE_FILE = ".hubforge-state.json"
LOCK_FILE = ".hubforge-apply.lock"
#: How far back a full materialization reads: all of the generated data.
MATERIALIZE_WINDOW = timedelta(days=365)
#: Seconds to wait for Redis to answer the reachability check.
REDIS_TIMEOUT = 3.0


@dataclass(frozen=True)
class Outcome:
    """What a run did: where the repository is, its project, the steps taken, and its state."""

    repo: Path
    project: str
    plan: Plan
    state: State
    seconds: float


def features_dir(cfg: PlatformConfig) -> Path:
    """The demo repository's folder under the platform's data folder."""
    return cfg.data_dir / FEATURES_DIR


def _write(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` (private to this account) unless it is there already."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return False
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return True


def _private_dirs(cfg: PlatformConfig, repo: Path) -> None:
    """The data folder as ``hubforge up`` makes it (0700, the platform's alone), and the repository in it."""
    try:
        for folder in (cfg.data_dir, repo, repo / "data"):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.chmod(0o700)
    except OSError as exc:
        raise FeaturesError(f"features: cannot create {repo}: {exc.strerror}") from exc


@contextlib.contextmanager
def _locked(repo: Path) -> Iterator[None]:
    """One ``apply`` at a time per repository (two ``make up`` at once, a test beside the platform)."""
    fd = os.open(repo / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _check_online(repo: Path, redis_url: str) -> str:
    """Make sure the online store answers; how to name it in the progress line."""
    if not redis_url:
        return f"SQLite ({repo / 'online.db'})"
    import redis  # Feast's Redis store brings it; only a Redis-backed platform needs it

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise FeaturesError(f"features: cannot reach Redis at {redacted(redis_url)}: {exc}") from exc
    finally:
        client.close()
    return f"Redis at {redacted(redis_url)}"


def _read_state(repo: Path) -> State | None:
    try:
        return State.from_json((repo / STATE_FILE).read_text())
    except FileNotFoundError:
        return None


def _generate(repo: Path, anchor: datetime) -> int:
    """Write the demo's Parquet files for ``anchor``; how many rows."""
    from .datagen import generate  # numpy and pandas only for this step

    frames = generate(anchor)
    for name in FILES:
        tmp = repo / "data" / f".{name}.parquet.tmp"
        frames[name].to_parquet(tmp, index=False)
        tmp.chmod(0o600)
        os.replace(tmp, repo / "data" / f"{name}.parquet")
    return sum(len(frame) for frame in frames.values())


def _data_present(repo: Path) -> bool:
    return all((repo / "data" / f"{name}.parquet").is_file() for name in FILES)


def _current(repo: Path, redis_url: str, now: datetime) -> State:
    """This run's state before any step: the fingerprints and the current hour as the data's anchor."""
    files = [(repo / DEFINITIONS).read_text(), (repo / "feature_store.yaml").read_text()]
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return State(
        definitions=digest(*files, version("feast")),
        online=digest(repr(sorted(online_store(redis_url).items()))),
        anchor=hour.isoformat(),
        data_version=DATA_VERSION,
    )


def _run_steps(repo: Path, steps: Plan, state: State, now: datetime, log: Callable[[str], None]) -> State:
    """Generate, apply and materialize as planned; the state to record."""
    anchor = datetime.fromisoformat(state.anchor)
    if steps.generate:
        rows = _generate(repo, anchor)
        log(f"features: data: generated {rows:,} rows in {repo / 'data'} (up to {anchor:%Y-%m-%d %H:%M} UTC)")
    else:
        log(f"features: data: kept (generated up to {anchor:%Y-%m-%d %H:%M} UTC)")
    if steps.apply or steps.materialize or not (repo / CATALOG_FILE).is_file():
        log("features: loading Feast")
        from . import store  # Feast itself: seconds of imports, only when there is work for it
    if steps.apply:
        started = time.monotonic()
        applied = store.apply_repo(repo)
        log(f"features: applied {applied} ({time.monotonic() - started:.1f} s)")
    else:
        log("features: registry: up to date")
    if steps.materialize:
        started = time.monotonic()
        count = store.materialize_repo(repo, anchor - MATERIALIZE_WINDOW, now)
        log(f"features: materialized {count} feature views up to now ({time.monotonic() - started:.1f} s)")
        state = replace(state, materialized_to=now.isoformat())
    else:
        log(f"features: online store: up to date (materialized {state.materialized_to[:16].replace('T', ' ')} UTC)")
    if steps.apply or steps.materialize or not (repo / CATALOG_FILE).is_file():
        _write_catalog(repo, now, log)
    return state


def _write_catalog(repo: Path, now: datetime, log: Callable[[str], None]) -> None:
    """The registry as ``catalog.json``, for browsing without Feast (:mod:`.catalog`)."""
    from . import store

    catalog = store.catalog_of(store.open_store(repo), now)
    _write(repo / CATALOG_FILE, json.dumps(catalog, indent=1) + "\n")
    count = len(catalog["feature_views"])
    log(f"features: catalog: {count} feature views, {len(catalog['feature_services'])} feature services")


def apply_demo(
    cfg: PlatformConfig,
    log: Callable[[str], None] = print,
    *,
    project: str = DEFAULT_PROJECT,
    force: bool = False,
    now: datetime | None = None,
) -> Outcome:
    """Write, generate, apply and materialize the demo repository as needed; one ``log`` line a step."""
    started = time.monotonic()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    redis_url = cfg.backends.redis_url
    repo = features_dir(cfg)
    _private_dirs(cfg, repo)
    # What Feast creates (the registry, SQLite's online.db) is the platform's alone, as
    # everything `hubforge up` starts writes (its umask is 077 too).
    umask = os.umask(0o077)
    try:
        state, steps = _apply_locked(repo, project, redis_url, now, force, log)
    finally:
        os.umask(umask)
    seconds = time.monotonic() - started
    log(f"features: ready ({seconds:.1f} s)")
    return Outcome(repo=repo, project=project, plan=steps, state=state, seconds=seconds)


def _apply_locked(
    repo: Path, project: str, redis_url: str, now: datetime, force: bool, log: Callable[[str], None]
) -> tuple[State, Plan]:
    """The steps, one run at a time: write the files, check the online store, plan, run, record."""
    with _locked(repo):
        written = [
            _write(repo / DEFINITIONS, definitions_text()),
            _write(repo / "feature_store.yaml", feature_store_yaml(project, redis_url)),
        ]
        log(f"features: repository {repo} ({'written' if any(written) else 'unchanged'}, project {project})")
        log(f"features: online store: {_check_online(repo, redis_url)}")
        before, current = _read_state(repo), _current(repo, redis_url, now)
        steps = plan(
            before,
            current,
            data_present=_data_present(repo),
            registry_present=(repo / "registry.db").is_file(),
            force=force,
        )
        if before is not None and not steps.generate:
            current = replace(current, anchor=before.anchor, materialized_to=before.materialized_to)
        state = _run_steps(repo, steps, current, now, log)
        _write(repo / STATE_FILE, state.to_json())
    return state, steps
