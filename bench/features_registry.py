"""Run by the Feast environment's Python for ``bench/features.py`` (never imported by the
platform's): ``generate OUT N`` applies a repository of N feature views (50 feature
services) with the real Feast and writes its ``catalog.json``; ``baseline OUT`` times what a
notebook does without the catalog: import Feast and list the registry's views and
services; ``online REPO N`` times N plain online reads; ``teardown REPO`` empties a
repository's online store. Timings are printed as JSON."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

DEFINITIONS = """\
from datetime import timedelta
from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float32
from feast.value_type import ValueType

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64,
                  owner="growth@example.org", description="A customer")
source = FileSource(name="base", path={path!r}, timestamp_field="event_timestamp")
views = [
    FeatureView(
        name=f"domain{{i % 40}}_view_{{i:04d}}", entities=[customer], ttl=timedelta(days=1 + i % 90), source=source,
        schema=[Field(name=f"f{{j}}", dtype=Float32, description=f"signal {{j}} of view {{i}}") for j in range(5)],
        owner=f"team{{i % 25}}@example.org", description=f"Generated view {{i}} of domain {{i % 40}}",
        tags={{"domain": f"d{{i % 40}}", "tier": ("hot", "warm", "cold")[i % 3]}},
    )
    for i in range({n})
]
services = [FeatureService(name=f"model_{{k}}", features=views[k * 10 : (k + 1) * 10], owner="ml@example.org")
            for k in range(50)]
for _i, _view in enumerate(views):
    globals()[f"view_{{_i}}"] = _view
for _k, _service in enumerate(services):
    globals()[f"service_{{_k}}"] = _service
"""

STORE = """\
project: bench
provider: local
registry: {registry_type: file, path: registry.db}
offline_store: {type: file}
online_store: {type: sqlite, path: online.db}
entity_key_serialization_version: 3
auth: {type: no_auth}
"""


def generate(repo: Path, n: int) -> None:
    import pandas as pd

    from hubforge.features.store import apply_repo, catalog_of, open_store

    (repo / "data").mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    frame = {"customer_id": [1, 2], "event_timestamp": [now, now], **{f"f{j}": [0.1, 0.2] for j in range(5)}}
    pd.DataFrame(frame).to_parquet(repo / "data" / "base.parquet")
    (repo / "feature_store.yaml").write_text(STORE)
    (repo / "definitions.py").write_text(DEFINITIONS.format(path=str(repo / "data" / "base.parquet"), n=n))
    apply_repo(repo)
    (repo / "catalog.json").write_text(json.dumps(catalog_of(open_store(repo), now)))


def baseline(repo: Path) -> dict[str, float]:
    """Seconds to import Feast, and to open the store and list its views and services."""
    started = time.perf_counter()
    from feast import FeatureStore

    imported = time.perf_counter()
    store = FeatureStore(repo_path=str(repo))
    views = store.list_feature_views()
    services = store.list_feature_services()
    listed = time.perf_counter()
    assert views and services
    return {"import": imported - started, "list": listed - imported}


def online(repo: Path, calls: int) -> list[float]:
    """Seconds of each plain ``get_online_features`` call, one merchant a call, as the
    reader's benchmark asks (after one call that opens the store)."""
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    features = ["merchant_risk:avg_ticket_usd", "merchant_risk:category"]
    for merchant in range(501, 521):  # as the reader's side: the store open, the keys read once
        store.get_online_features(features=features, entity_rows=[{"merchant_id": merchant}]).to_dict()
    times = []
    for i in range(calls):
        started = time.perf_counter()
        store.get_online_features(features=features, entity_rows=[{"merchant_id": 501 + i % 20}]).to_dict()
        times.append(time.perf_counter() - started)
    return times


def teardown(repo: Path) -> None:
    """Remove the repository's keys from its online store (the shared Redis)."""
    from feast import FeatureStore

    FeatureStore(repo_path=str(repo)).teardown()


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        generate(Path(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "online":
        print(json.dumps(online(Path(sys.argv[2]), int(sys.argv[3]))))
    elif sys.argv[1] == "teardown":
        teardown(Path(sys.argv[2]))
    else:
        print(json.dumps(baseline(Path(sys.argv[2]))))
