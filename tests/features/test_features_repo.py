"""The demo feature repository with the real Feast: applied, materialized, read online and offline.

One repository is applied per module on SQLite and one on the Redis at 127.0.0.1:6379
(under a project of this run's own, torn down at the end); the tests read them as a
notebook would, with ``FeatureStore``. The plain logic (files, data, what a run redoes) is
in ``test_features_plan.py``. These run in the Feast environment (``make test-features``);
the platform's ``hubforge features apply``, which hands over to it, is tested from the
platform's side in ``tests/integration/test_features_cli.py``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
from feast import FeatureStore

from hubforge.config import PlatformConfig, load_config
from hubforge.contract import DATA_ENV
from hubforge.features import DEFAULT_PROJECT, FeaturesError, Outcome, apply_demo
from hubforge.features.__main__ import main
from hubforge.features.repo import Plan
from hubforge.features.store import apply_repo

REDIS_URL = "redis://127.0.0.1:6379/0"
CUSTOMERS = [1001, 1002, 1250, 1500]
MERCHANTS = [501, 537, 600]


@dataclass
class Applied:
    """A repository applied by ``apply_demo``, the lines it logged, and its store."""

    cfg: PlatformConfig
    outcome: Outcome
    lines: list[str]

    @property
    def repo(self) -> Path:
        return self.outcome.repo

    def store(self) -> FeatureStore:
        return FeatureStore(repo_path=str(self.repo))

    def data(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.repo / "data" / f"{name}.parquet")


def platform_config(tmp: Path, redis_url: str = "") -> PlatformConfig:
    path = tmp / "platform.yaml"
    path.write_text(f"backends: {{redis_url: '{redis_url}'}}\n" if redis_url else "{}\n")
    return load_config(path, environ={DATA_ENV: str(tmp / "data")})


def apply_logged(cfg: PlatformConfig, project: str = DEFAULT_PROJECT) -> tuple[Outcome, list[str]]:
    lines: list[str] = []
    outcome = apply_demo(cfg, lines.append, project=project)
    return outcome, lines


@pytest.fixture(scope="module")
def on_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Applied:
    cfg = platform_config(tmp_path_factory.mktemp("sqlite"))
    outcome, lines = apply_logged(cfg)
    return Applied(cfg, outcome, lines)


def project_keys(client: redis.Redis, project: str) -> int:
    """Feast's Redis keys of ``project`` (each ends with the project's name)."""
    return sum(1 for _ in client.scan_iter(match=b"*" + project.encode(), count=1000))


@pytest.fixture(scope="module")
def on_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Applied]:
    project = f"hftest_{secrets.token_hex(4)}"  # this run's own keys in the shared Redis
    cfg = platform_config(tmp_path_factory.mktemp("redis"), REDIS_URL)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        outcome, lines = apply_logged(cfg, project=project)
        yield Applied(cfg, outcome, lines)
    finally:
        FeatureStore(repo_path=str(cfg.data_dir / "features")).teardown()
        left = project_keys(client, project)
        client.close()
        assert left == 0, f"{left} Redis keys of {project} left after teardown"


@pytest.fixture(params=["sqlite", "redis"])
def applied(request: pytest.FixtureRequest) -> Applied:
    return request.getfixturevalue(f"on_{request.param}")


def latest(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    return frame.sort_values("event_timestamp").groupby(key).tail(1).set_index(key)


STEPS = ("repository ", "online store: ", "data: ", "loading Feast", "applied ", "materialized ", "catalog: ")
STEPS += ("ready (",)


def test_the_first_apply_reports_each_step_on_one_line(on_sqlite: Applied) -> None:
    assert len(on_sqlite.lines) == len(STEPS)
    for line, step in zip(on_sqlite.lines, STEPS, strict=True):
        assert line.startswith(f"features: {step}"), line
    text = "\n".join(on_sqlite.lines)
    assert f"repository {on_sqlite.repo} (written, project hubforge_demo)" in text
    assert "online store: SQLite" in text and "data: generated 8,200 rows" in text
    assert "applied 2 entities, 4 data sources, 3 feature views, 1 on-demand feature view, 2 feature services" in text
    assert "materialized 3 feature views up to now" in text
    assert on_sqlite.outcome.plan == Plan(generate=True, apply=True, materialize=True)
    # All of it in the platform's private data folder, readable by its account alone.
    assert on_sqlite.repo.parent == on_sqlite.cfg.data_dir
    assert on_sqlite.cfg.data_dir.stat().st_mode & 0o777 == 0o700
    for path in ("feature_store.yaml", "registry.db", "online.db", "data/transactions.parquet"):
        assert (on_sqlite.repo / path).stat().st_mode & 0o777 == 0o600, path


def test_the_registry_holds_every_object_with_owner_description_and_tags(on_sqlite: Applied) -> None:
    store = on_sqlite.store()
    objects: list[Any] = [
        *store.list_entities(),
        *store.list_data_sources(),
        *store.list_feature_views(),
        *store.list_on_demand_feature_views(),
        *store.list_feature_services(),
    ]
    names = {obj.name for obj in objects}
    assert {"customer", "merchant", "customer_profile", "customer_activity", "merchant_risk"} <= names
    assert {"transaction_risk", "churn_model_v1", "fraud_model_v1", "transaction_request"} <= names
    for obj in objects:
        assert obj.owner and obj.description and obj.tags, obj.name
    churn = store.get_feature_service("churn_model_v1")
    assert [p.name for p in churn.feature_view_projections] == ["customer_profile", "customer_activity"]


def test_online_reads_return_each_entitys_latest_row(applied: Applied) -> None:
    store = applied.store()
    rows = [{"customer_id": c} for c in CUSTOMERS]
    online = store.get_online_features(features=store.get_feature_service("churn_model_v1"), entity_rows=rows).to_df()
    profile = latest(applied.data("customer_profile"), "customer_id").loc[CUSTOMERS]
    activity = latest(applied.data("customer_activity"), "customer_id").loc[CUSTOMERS]
    online = online.set_index("customer_id").loc[CUSTOMERS]
    assert online["plan"].tolist() == profile["plan"].tolist()
    assert online["tenure_months"].tolist() == profile["tenure_months"].tolist()
    assert online["sessions_7d"].tolist() == activity["sessions_7d"].tolist()
    assert online["spend_7d_usd"].tolist() == pytest.approx(activity["spend_7d_usd"].tolist())


def test_the_on_demand_view_computes_from_the_request_and_the_online_rows(applied: Applied) -> None:
    store = applied.store()
    rows = [{"customer_id": 1001, "merchant_id": m, "amount_usd": 250.0} for m in MERCHANTS]
    online = store.get_online_features(features=store.get_feature_service("fraud_model_v1"), entity_rows=rows)
    result = online.to_df().set_index("merchant_id").loc[MERCHANTS]
    ticket = latest(applied.data("merchant_risk"), "merchant_id").loc[MERCHANTS, "avg_ticket_usd"]
    assert result["avg_ticket_usd"].tolist() == pytest.approx(ticket.tolist())
    assert result["amount_vs_merchant_avg"].tolist() == pytest.approx((250.0 / ticket).tolist())
    assert result["large_for_merchant"].tolist() == (250.0 / ticket > 3.0).tolist()


def test_an_unknown_customer_reads_as_missing(on_sqlite: Applied) -> None:
    store = on_sqlite.store()
    result = store.get_online_features(features=["customer_activity:sessions_7d"], entity_rows=[{"customer_id": 9}])
    assert result.to_dict()["sessions_7d"] == [None]


def test_a_historical_retrieval_joins_each_label_with_the_features_of_its_time(on_sqlite: Applied) -> None:
    labels = on_sqlite.data("churn_labels")
    store = on_sqlite.store()
    features = store.get_feature_service("churn_model_v1")
    training = store.get_historical_features(entity_df=labels, features=features).to_df()
    assert len(training) == len(labels) and training[["plan", "sessions_7d"]].notna().all().all()
    # Point in time: each label gets the last roll-up at or before its own timestamp.
    activity = on_sqlite.data("customer_activity").sort_values("event_timestamp")
    expected = pd.merge_asof(
        labels.sort_values("event_timestamp"), activity, on="event_timestamp", by="customer_id", direction="backward"
    )
    got = training.set_index(["customer_id", "event_timestamp"]).sort_index()
    want = expected.set_index(["customer_id", "event_timestamp"]).sort_index()
    assert got["sessions_7d"].tolist() == want["sessions_7d"].tolist()
    assert got["days_since_last_login"].tolist() == want["days_since_last_login"].tolist()


def test_the_fraud_service_builds_a_training_set_with_the_on_demand_features(on_sqlite: Applied) -> None:
    payments = on_sqlite.data("transactions").head(200)
    store = on_sqlite.store()
    features = store.get_feature_service("fraud_model_v1")
    training = store.get_historical_features(entity_df=payments, features=features).to_df()
    assert len(training) == 200
    assert training[["chargeback_rate_90d", "spend_7d_usd", "amount_vs_merchant_avg"]].notna().all().all()
    ratio = training["amount_usd"] / training["avg_ticket_usd"]
    assert training["amount_vs_merchant_avg"].tolist() == pytest.approx(ratio.tolist())


def test_a_second_run_changes_nothing_and_never_imports_feast(on_sqlite: Applied) -> None:
    repo = on_sqlite.repo
    watched = [repo / "registry.db", repo / "online.db", repo / "feature_store.yaml", *(repo / "data").iterdir()]
    before = {path: path.stat().st_mtime_ns for path in watched}
    probe = (
        "import sys; from hubforge.features.__main__ import main; status = main(['apply']);"
        "print('feast imported' if 'feast' in sys.modules else 'no feast'); sys.exit(status)"
    )
    env = {**os.environ, DATA_ENV: str(on_sqlite.cfg.data_dir)}
    env.pop("HUBFORGE_CONFIG", None)
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"[hubforge] features: repository {repo} (unchanged, project hubforge_demo)"
    assert "[hubforge] features: data: kept" in lines[2] and lines[3] == "[hubforge] features: registry: up to date"
    assert lines[4].startswith("[hubforge] features: online store: up to date")
    assert lines[-1] == "no feast"
    assert {path: path.stat().st_mtime_ns for path in watched} == before


def test_a_week_later_the_data_moves_on_and_the_online_store_follows(tmp_path: Path) -> None:
    cfg = platform_config(tmp_path)
    first, _ = apply_logged(cfg)
    later = datetime.fromisoformat(first.state.materialized_to) + timedelta(days=8)
    second = apply_demo(cfg, lambda line: None, now=later)
    assert second.plan == Plan(generate=True, apply=False, materialize=True)
    assert datetime.fromisoformat(second.state.anchor) - datetime.fromisoformat(first.state.anchor) >= timedelta(days=8)
    activity = pd.read_parquet(second.repo / "data" / "customer_activity.parquet")
    newest = latest(activity, "customer_id").loc[1001]
    assert newest["event_timestamp"] > pd.Timestamp(first.state.materialized_to)  # the rows moved on
    store = FeatureStore(repo_path=str(second.repo))
    online = store.get_online_features(features=["customer_activity:sessions_7d"], entity_rows=[{"customer_id": 1001}])
    read = online.to_dict(include_event_timestamps=True)
    assert read["sessions_7d"] == [newest["sessions_7d"]]
    # The same values as a week before (the same seed): the row's time says it was materialized again.
    assert pd.Timestamp(read["sessions_7d__ts"][0], unit="s", tz="UTC") == newest["event_timestamp"]


def test_the_apply_reaches_redis_under_its_own_project(on_redis: Applied) -> None:
    assert "online store: Redis at redis://127.0.0.1:6379/0" in "\n".join(on_redis.lines)
    assert not (on_redis.repo / "online.db").exists()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        # One hash per customer and per merchant, each ending with the project's name.
        assert project_keys(client, on_redis.outcome.project) == 500 + 100
    finally:
        client.close()


def test_unreachable_redis_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    with refused_port() as port:
        url = f"redis://hubforge:s3cret@127.0.0.1:{port}/0"
        config = tmp_path / "platform.yaml"
        config.write_text(f"backends: {{redis_url: '{url}'}}\n")
        status = main(["apply", "--config", str(config)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"hubforge: error: features: cannot reach Redis at redis://hubforge:***@127.0.0.1:{port}/0: ")
    assert err.count("\n") == 1 and "Traceback" not in err and "s3cret" not in err


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port bound (so nobody else takes it) and never listened on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
def copy_of(on_sqlite: Applied, tmp_path: Path) -> Path:
    """A repository of the test's own: the applied one's files, its data shared."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("definitions.py", "feature_store.yaml"):
        (repo / name).write_text((on_sqlite.repo / name).read_text())
    (repo / "data").symlink_to(on_sqlite.repo / "data")
    return repo


def one_line_error(repo: Path) -> str:
    with pytest.raises(FeaturesError) as err:
        apply_repo(repo)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400
    return message


def test_a_definitions_file_that_is_not_python_is_one_line(copy_of: Path) -> None:
    path = copy_of / "definitions.py"
    path.write_text(path.read_text().replace("customer = Entity(", "customer = Entity(,", 1))
    message = one_line_error(copy_of)
    assert message.startswith("features: definitions: definitions.py line ") and "syntax" in message


def test_a_view_over_a_missing_file_is_one_line(copy_of: Path) -> None:
    path = copy_of / "definitions.py"
    path.write_text(path.read_text().replace('"merchant_risk.parquet"', '"nowhere.parquet"', 1))
    message = one_line_error(copy_of)
    assert message.startswith("features: apply: ") and "nowhere.parquet" in message


def test_an_unknown_online_store_is_one_line(copy_of: Path) -> None:
    path = copy_of / "feature_store.yaml"
    path.write_text(path.read_text().replace("type: sqlite", "type: cassandra-ish"))
    message = one_line_error(copy_of)
    assert message.startswith("features: feature_store.yaml: ")


def test_the_features_package_imports_feast_only_for_the_steps_that_need_it() -> None:
    # `import feast` takes seconds: only hubforge.features.store imports it, inside the steps.
    probe = (
        "import sys, hubforge.features, hubforge.features.apply, hubforge.features.__main__ as cli;"
        " cli.build_parser(); print(sorted(m for m in sys.modules if m == 'feast' or m.startswith('feast.')))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_the_catalog_holds_the_registry_for_browsing_without_feast(on_sqlite: Applied) -> None:
    from hubforge.features.catalog import load

    catalog = load(on_sqlite.repo / "catalog.json")
    assert (on_sqlite.repo / "catalog.json").stat().st_mode & 0o777 == 0o600
    store = on_sqlite.store()
    assert catalog.project["name"] == "hubforge_demo"
    assert {i.name for i in catalog.of_kind("feature_view")} == {
        *(v.name for v in store.list_feature_views()),
        *(v.name for v in store.list_on_demand_feature_views()),
    }
    profile = catalog.get("feature_view", "customer_profile")
    assert profile is not None and profile.restricted, "tagged sensitivity: confidential"
    assert profile.data["ttl_seconds"] == 90 * 86400 and profile.data["entities"] == ["customer"]
    assert profile.data["sources"] == ["customer_profile_source"]
    assert {f["name"] for f in profile.data["features"]} >= {"plan", "tenure_months"}
    assert profile.data["materialized_to"][:16] == on_sqlite.outcome.state.materialized_to[:16]
    risk = catalog.get("feature_view", "transaction_risk")
    assert risk is not None and risk.data["kind"] == "on_demand"
    assert risk.data["entities"] == ["customer", "merchant"]
    assert set(risk.data["sources"]) == {"transaction_request", "merchant_risk", "customer_activity"}
    assert catalog.lineage("customer_activity") == {
        "sources": ["customer_activity_source"],
        "services": ["churn_model_v1", "fraud_model_v1"],
    }
    assert [hit.item.name for hit in catalog.search("chargeback")][:1] == ["merchant_risk"]
    assert {hit.item.name for hit in catalog.search("risk-engineering")} >= {"merchant", "fraud_model_v1"}


def test_a_lost_catalog_is_written_again_by_the_next_run(on_sqlite: Applied, tmp_path: Path) -> None:
    cfg = platform_config(tmp_path)
    first, _ = apply_logged(cfg)
    (first.repo / "catalog.json").unlink()
    again, lines = apply_logged(cfg)
    assert again.plan == Plan(generate=False, apply=False, materialize=False)
    assert any(line.startswith("features: catalog: 4 feature views, 2 feature services") for line in lines)
    assert (first.repo / "catalog.json").is_file()


def test_an_online_read_while_redis_is_away_says_so_in_one_line(on_redis: Applied, tmp_path: Path) -> None:
    """The service answers 503 for it (StoreUnreachable), not a 400: the request was fine."""
    import shutil

    from hubforge.features.repo import StoreUnreachable
    from hubforge.features.store import online_values, open_store

    repo = tmp_path / "repo"
    shutil.copytree(on_redis.cfg.data_dir / "features", repo)
    settings = repo / "feature_store.yaml"
    with refused_port() as port:
        settings.write_text(settings.read_text().replace("127.0.0.1:6379", f"127.0.0.1:{port}"))
        assert f"127.0.0.1:{port}" in settings.read_text()
        store = open_store(repo)
        with pytest.raises(StoreUnreachable) as caught:
            online_values(store, ["merchant_risk:category"], None, [{"merchant_id": 501}])
    message = str(caught.value)
    assert message.startswith("features: online read: a store cannot be reached: ConnectionError")
    assert "\n" not in message and "Traceback" not in message
