"""The MLflow UI's gate in process: refused features are answered "off", the UI's page gets its defaults.

The UI itself, in Debian's chromium behind the real platform, is in tests/platform/test_mlflow_ui.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from hubforge.hub.mlflow.policy import Owned, Principal
from hubforge.hub.mlflow.rules import authorize
from hubforge.hub.mlflow.ui import FEATURE_OFF, UI_DEFAULTS, feature_off, with_ui_defaults

WORKFLOW_KEY = "mlflow.workflowType_v1"


# --- the gate's pure parts ------------------------------------------------------------


def test_refused_ui_gets_are_answered_off_and_nothing_else_is() -> None:
    config = "ajax-api/3.0/mlflow/assistant/config"
    assert feature_off("GET", config, refused=True) == FEATURE_OFF["mlflow/assistant/config"]
    assert feature_off("GET", config, refused=True)["remote_access_allowed"] is False
    assert feature_off("GET", "api/2.0/mlflow/gateway-proxy", refused=True) == {"endpoints": []}
    # Whoever may use the feature reaches MLflow itself.
    assert feature_off("GET", config, refused=False) is None
    # Nothing that writes, and no other method, is ever answered "off".
    for method in ("PUT", "POST", "PATCH", "DELETE", "HEAD"):
        assert feature_off(method, config, refused=True) is None, method
        assert feature_off(method, "ajax-api/2.0/mlflow/users/current", refused=True) is None, method
    # A refused path with no "off" shape, or outside the API, stays refused.
    assert feature_off("GET", "ajax-api/3.0/mlflow/gateway/secrets/config", refused=True) is None
    assert feature_off("GET", "mlflow/assistant/config", refused=True) is None


def test_mlflow_accounts_are_off_for_everyone() -> None:
    for refused in (True, False):
        assert feature_off("GET", "ajax-api/2.0/mlflow/users/current", refused=refused) == {}
        assert feature_off("GET", "api/2.0/mlflow/users/current", refused=refused) == {}


def _stored(page: bytes) -> dict[str, str]:
    match = re.search(rb"<head><script>.*?\}\)\((\{.*?\})\)</script>", page)
    assert match, page
    return json.loads(match.group(1))


def test_the_ui_page_sets_model_training_first_unless_chosen() -> None:
    page = b'<!doctype html><html><head><title>MLflow</title><script defer src="main.js"></script></head></html>'
    rewritten = with_ui_defaults(page)
    stored = _stored(rewritten)
    # Stored as the UI stores them (JSON), under the UI's versioned keys.
    assert json.loads(stored[WORKFLOW_KEY]) == "machine_learning"
    assert json.loads(stored["mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"]) is True
    assert set(stored) == set(UI_DEFAULTS)
    # It runs before the bundle, and only sets keys nobody has set.
    assert rewritten.index(b"localStorage") < rewritten.index(b"main.js")
    assert b"localStorage.getItem(k)===null" in rewritten
    assert rewritten.replace(rewritten[rewritten.index(b"<script>") : rewritten.index(b"</script>") + 9], b"") == page


def test_the_ui_page_script_cannot_be_closed_early_and_no_head_is_left_alone() -> None:
    rewritten = with_ui_defaults(b"<html><head></head></html>", {"k</script>": "</script><b>"})
    assert rewritten.count(b"</script>") == 1
    assert _stored(rewritten) == {"k</script>": json.dumps("</script><b>")}
    assert with_ui_defaults(b"plain text, no page") == b"plain text, no page"


class Catalogue:
    """Two experiments: alice's and bob's."""

    def experiment(self, experiment_id: str) -> Owned | None:
        return {"1": Owned("1", "alice"), "2": Owned("2", "bob")}.get(experiment_id)


@pytest.mark.parametrize("path", ["ajax-api/3.0/mlflow/traces/metrics", "ajax-api/3.0/mlflow/datasets/search"])
def test_trace_metrics_and_dataset_searches_follow_their_experiments(path: str) -> None:
    alice = Principal("alice", frozenset({"custom:experiments:write"}))
    admin = Principal("erin", roles=frozenset({"platform-admin"}))

    def decide(who: Principal, ids: Any) -> str | None:
        return authorize(who, "POST", path, {"experiment_ids": ids}, Catalogue())  # type: ignore[arg-type]

    assert decide(alice, ["1"]) is None
    assert "may not read experiment 2" in (decide(alice, ["1", "2"]) or "")
    assert "name the experiments" in (decide(alice, []) or "")
    assert decide(admin, ["2"]) is None
