"""The feature browser on a registry of 2,000 feature views (issue 13), same run:

- **open**: from the catalog the features service sends (its bytes) to the browser
  showing its first results, against what a notebook does without a catalog: import
  Feast and list the registry's feature views and services (in the Feast environment,
  timed there; reported with and without Feast's import). Target: ≤ 300 ms.
- **keystroke**: one search as a person types ``domain17 view`` letter by letter (the
  browser's search and results), against the least any search can do, a substring test
  of every view's name. Target: ≤ 50 ms.

- **online read**: one merchant's two features a call, through :class:`OnlineFeatures`
  (the notebook's reader: the features service, hot keys kept in the kernel), hot (the
  20 merchants asked for again and again) and cold (nothing kept: every call goes to the
  service), against plain ``FeatureStore.get_online_features`` in the Feast environment,
  on SQLite and on the Redis at 127.0.0.1:6379. Target: under 1 ms for the hot tier.

The registry is generated once with the real Feast (about a minute) and kept under
``build/bench/``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench.report import Result
from hubforge.config import load_config
from hubforge.features.catalog import Catalog
from hubforge.features.environment import feast_python

VIEWS = 2000
ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "bench" / f"features-{VIEWS}"
TYPED = "domain17 view"


def _feast(*args: str) -> str:
    python = feast_python(load_config(None, environ={}))
    script = ROOT / "bench" / "features_registry.py"
    done = subprocess.run([str(python), str(script), *args], capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the Feast environment failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def registry() -> Path:
    """The generated repository (made with the real Feast the first time)."""
    marker = (ROOT / "bench" / "features_registry.py").read_text()
    stamp = CACHE / ".generator"
    if not (stamp.is_file() and stamp.read_text() == marker and (CACHE / "catalog.json").is_file()):
        CACHE.mkdir(parents=True, exist_ok=True)
        _feast("generate", str(CACHE), str(VIEWS))
        stamp.write_text(marker)
    return CACHE


def _open(body: bytes) -> float:
    """Seconds from the service's bytes to the browser's first results."""
    from hubforge.widgets.feature_browser import FeatureBrowser

    started = time.perf_counter()
    catalog = Catalog.from_json(body)
    browser = FeatureBrowser(client=_Loaded(catalog))
    browser.search("")
    assert browser.results
    return time.perf_counter() - started


class _Loaded:
    """A client whose catalog is already here (the bench times what the browser does with it)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def catalog(self) -> Catalog:
        return self._catalog


def _keystrokes(catalog: Catalog) -> list[float]:
    from hubforge.widgets.feature_browser import FeatureBrowser

    browser = FeatureBrowser(client=_Loaded(catalog))
    browser.search("")
    times = []
    for end in range(1, len(TYPED) + 1):
        started = time.perf_counter()
        browser.search(TYPED[:end])
        times.append(time.perf_counter() - started)
    assert browser.results
    return times


def _substring(names: list[str]) -> list[float]:
    times = []
    for end in range(1, len(TYPED) + 1):
        words = TYPED[:end].lower().split()
        started = time.perf_counter()
        found = [n for n in names if all(w in n for w in words)]
        times.append(time.perf_counter() - started)
        assert found is not None
    return times


ONLINE_CALLS = 400
REDIS_URL = "redis://127.0.0.1:6379/0"


def _quantile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100)[q - 1]


def _apply(tmp: Path, redis_url: str) -> Path:
    """The demo repository applied into ``tmp`` (``redis_url``: its online store); the data folder."""
    import sys

    config = tmp / "platform.yaml"
    project = f"bench_{uuid.uuid4().hex[:8]}"  # its own keys in a shared Redis
    backends = f"backends: {{redis_url: '{redis_url}'}}\n" if redis_url else ""
    config.write_text(backends)
    hubforge = Path(sys.executable).with_name("hubforge")
    env = {"PATH": "/usr/bin:/bin", "HUBFORGE_DATA": str(tmp / "data")}
    done = subprocess.run([str(hubforge), "features", "apply", "--config", str(config)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"features apply failed: {done.stderr.strip()}")
    if redis_url:  # a project of its own: rewrite the store's project and apply again
        yaml_path = tmp / "data" / "features" / "feature_store.yaml"
        yaml_path.write_text(yaml_path.read_text().replace("project: hubforge_demo", f"project: {project}"))
        state = tmp / "data" / "features" / ".hubforge-state.json"
        state.unlink()
        done = subprocess.run([str(hubforge), "features", "apply", "--config", str(config)], env=env,
                              capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    return tmp / "data"


def _online(backend: str) -> list[Result]:
    from harness.features import SERVICE_TOKEN, USERS, FeaturesProcess
    from harness.hub import running_hub
    from hubforge.features.reader import OnlineFeatures

    features = ["merchant_risk:avg_ticket_usd", "merchant_risk:category"]
    with tempfile.TemporaryDirectory(prefix="hubforge-bench-online-") as tmp:
        data = _apply(Path(tmp), REDIS_URL if backend == "Redis" else "")
        repo = data / "features"
        try:
            plain = [t * 1000 for t in json.loads(_feast("online", str(repo), str(ONLINE_CALLS)))]
            with running_hub(USERS, SERVICE_TOKEN) as hub:
                service = FeaturesProcess(hub, data)
                try:
                    sides = {}
                    for name, ttl in (("hot", 60.0), ("cold", 0.0)):
                        reader = OnlineFeatures(service.url, "alice-token", ttl=ttl)
                        for merchant in range(501, 521):  # the service opens its store; the hot keys
                            reader.get(features, [{"merchant_id": merchant}])
                        times = []
                        for i in range(ONLINE_CALLS):
                            started = time.perf_counter()
                            reader.get(features, [{"merchant_id": 501 + i % 20}])
                            times.append((time.perf_counter() - started) * 1000)
                        reader.close()
                        sides[name] = times
                finally:
                    service.stop()
        finally:
            if backend == "Redis":
                _feast("teardown", str(repo))
    baseline = f"plain get_online_features ({backend})"
    hot, plain_us = [t * 1000 for t in sides["hot"]], [t * 1000 for t in plain]  # the hot tier in µs
    return [
        Result(f"features: online read hot p50, {backend}", "us", hot, plain_us, baseline),
        Result(
            f"features: online read hot p99, {backend}", "us", [_quantile(hot, 99)], [_quantile(plain_us, 99)], baseline
        ),
        Result(f"features: online read cold p50, {backend}", "ms", sides["cold"], plain, baseline),
    ]


RESTRICTED_CALLS = 200


def _restricted() -> list[Result]:
    """A restricted view read under a grant (checked with the real governance service, the read's
    audit event on disk before the answer) against an unrestricted read, same service, same run."""
    from harness.features import ACCESS, FeaturesProcess
    from harness.governance import PREFIX, serving_governance
    from hubforge.features.reader import OnlineFeatures
    from hubforge.hub.governance.store import GovernanceStore

    with tempfile.TemporaryDirectory(prefix="hubforge-bench-restricted-") as tmp:
        data = _apply(Path(tmp), "")
        store = GovernanceStore(f"sqlite:///{tmp}/governance.sqlite")
        store.upgrade()
        with serving_governance(store, Path(tmp) / "governance") as gov:
            alice = gov.hub.tokens["alice-token"]
            gov.hub.tokens["alice-token"] = {**alice, "scopes": [*alice["scopes"], ACCESS]}
            body = {"kind": "data-access", "target": "feature_view:hubforge_demo/customer_profile",
                    "justification": "The restricted-read benchmark.", "duration_days": 1}  # fmt: skip
            with gov.client("alice-token") as c:
                request = c.post("api/requests", json=body).json()
            gov.decide("dan-token", request["id"]).raise_for_status()
            service = FeaturesProcess(gov.hub, data, token="features-token", governance=gov.url + PREFIX)
            try:
                reader = OnlineFeatures(service.url, "alice-token", ttl=0.0, record=False)
                reads = {"restricted": ["customer_profile:plan", "customer_profile:tenure_months"],
                         "open": ["customer_activity:sessions_7d", "customer_activity:spend_7d_usd"]}  # fmt: skip
                times: dict[str, list[float]] = {name: [] for name in reads}
                for features in reads.values():  # open the store; fetch the grant
                    reader.get(features, [{"customer_id": 1001}])
                for i in range(RESTRICTED_CALLS):  # interleaved: the machine's noise falls on both
                    for name, features in reads.items():
                        started = time.perf_counter()
                        reader.get(features, [{"customer_id": 1001 + i % 20}])
                        times[name].append((time.perf_counter() - started) * 1000)
                reader.close()
            finally:
                service.stop()
        store.dispose()
    baseline, name = "unrestricted read, same service", "features: restricted online read (grant + audit)"
    p99 = [_quantile(times["restricted"], 99)], [_quantile(times["open"], 99)]
    return [
        Result(f"{name} p50", "ms", times["restricted"], times["open"], baseline),
        Result(f"{name} p99", "ms", *p99, baseline),
    ]


def run(repeat: int) -> list[Result]:
    """Opening the browser and typing in it, against Feast's registry and a bare filter."""
    repo = registry()
    body = (repo / "catalog.json").read_bytes()
    catalog = Catalog.from_json(body)
    names = [item.name for item in catalog.of_kind("feature_view")]
    assert len(names) == VIEWS
    opened, feast_import, feast_list, typed, floor = [], [], [], [], []
    for _ in range(repeat):
        opened.append(_open(body) * 1000)
        timing = json.loads(_feast("baseline", str(repo)))
        feast_import.append((timing["import"] + timing["list"]) * 1000)
        feast_list.append(timing["list"] * 1000)
        typed.extend(t * 1000 for t in _keystrokes(catalog))
        floor.extend(t * 1000 for t in _substring(names))
    p99 = [statistics.quantiles(typed, n=100)[98]]
    floor_p99 = [statistics.quantiles(floor, n=100)[98]]
    online = [result for backend in ("SQLite", "Redis") for result in _online(backend)]
    return [
        *online,
        *_restricted(),
        Result("features: open browser, 2k views", "ms", opened, feast_list, "Feast: list views+services"),
        Result("features: open browser, 2k views", "ms", opened, feast_import, "Feast: import + list"),
        Result("features: keystroke search (p50)", "ms", typed, floor, "substring test of names"),
        Result("features: keystroke search (p99)", "ms", p99, floor_p99, "substring test of names"),
    ]
