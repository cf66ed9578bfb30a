"""One refusal hierarchy: every "no" the platform answers carries its kind and status, and
every error class of the package is either such a refusal or a named fault."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from hubforge.errors import (
    CLI_EXIT,
    MLFLOW_CODES,
    ConfigError,
    Conflict,
    Forbidden,
    HubforgeError,
    Invalid,
    LaunchError,
    NotFound,
    Refusal,
    Unavailable,
    http_answer,
)

#: Errors that are not answers to a request: they stop a start, or report a fault the
#: platform itself has; each edge turns them into its own "something broke".
FAULTS = {
    "hubforge.errors.ConfigError",
    "hubforge.errors.LaunchError",
    "hubforge.spawner_profiles.local.accounts.AccountError",
    "hubforge.spawner_profiles.local.accounts.IsolationRefused",
    "hubforge.spawner_profiles.local.gpus.store.GpuStateError",
    # The widgets answer no request: their errors are lines shown in the panel.
    "hubforge.widgets.client.WidgetError",
    # `hubforge features apply` (make up) could not write, apply or materialize the feature repository.
    "hubforge.features.repo.FeaturesError",
}

#: Modules that run only in the Feast environment (hubforge.features.environment): they import Feast.
FEAST_ONLY = {"features/store.py"}


ROOT = Path(__file__).resolve().parents[2]
#: Source folders and the package names they install as (the kernel side answers no request).
PACKAGES = {"hubforge": "hubforge", "hub": "hubforge.hub", "spawner_profiles": "hubforge.spawner_profiles"}


def _package_errors() -> set[type[HubforgeError]]:
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "migrations" in path.parts or "demo-repo" in path.parts or path.name == "jupyterhub_config.py":
                continue  # scripts run by alembic, JupyterHub and Feast (a feature repository), not modules
            if path.relative_to(ROOT / folder).as_posix() in FEAST_ONLY:
                continue
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            importlib.import_module(".".join((package, *parts)))
    importlib.import_module("hubforge.widgets.client")  # named in FAULTS, whichever tests ran before
    found: set[type[HubforgeError]] = set()
    todo: list[type[HubforgeError]] = [HubforgeError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("hubforge.") and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_each_kind_carries_its_status_and_one_may_override_it() -> None:
    kinds = {Invalid: 400, Forbidden: 403, NotFound: 404, Conflict: 409, Unavailable: 503}
    for kind, status in kinds.items():
        refusal = kind("no")
        assert refusal.status == status and http_answer(refusal) == (status, "no")
        assert MLFLOW_CODES[status]
    assert http_answer(Forbidden("not yet", status=409)) == (409, "not yet")
    assert Forbidden("x").status == 403  # the override stays with its instance
    assert CLI_EXIT == 2


def test_every_error_of_the_package_is_a_refusal_or_a_named_fault() -> None:
    named = {f"{error.__module__}.{error.__qualname__}": error for error in _package_errors()}
    assert set(named) >= FAULTS, sorted(FAULTS - set(named))
    unclassified = sorted(
        name for name, error in named.items() if not issubclass(error, Refusal) and name not in FAULTS
    )
    assert not unclassified, f"make these Refusals (Invalid, Forbidden, ...) or name them in FAULTS: {unclassified}"


@pytest.mark.parametrize(
    ("dotted", "kind"),
    [
        ("hubforge.catalog.ChoiceError", Invalid),
        ("hubforge.spawner_profiles.local.gpus.allocation.QuotaExceeded", Forbidden),
        ("hubforge.spawner_profiles.local.gpus.allocation.NoSuchGpu", Invalid),
        ("hubforge.spawner_profiles.local.gpus.allocation.AllocationConflict", Conflict),
        ("hubforge.hub.governance.store.InvalidText", Invalid),
        ("hubforge.hub.governance.store.RequestNotFound", NotFound),
        ("hubforge.hub.governance.store.AlreadyDecided", Conflict),
        ("hubforge.hub.governance.store.SelfDecision", Forbidden),
        ("hubforge.errors.StoreError", Unavailable),
        ("hubforge.hub.mlflow.gate.HubUnavailable", Unavailable),
    ],
)
def test_the_platforms_refusals_are_of_their_kind(dotted: str, kind: type[Refusal]) -> None:
    module, _, name = dotted.rpartition(".")
    error = getattr(importlib.import_module(module), name)
    assert issubclass(error, kind)
    # "Not found" is no outage: nothing has to special-case it before catching outages.
    assert issubclass(error, Unavailable) == (kind is Unavailable)


def test_a_policys_refusal_keeps_the_status_it_chose() -> None:
    from hubforge.hub.governance.policy import PolicyDenied

    assert http_answer(PolicyDenied(409, "decided")) == (409, "decided")
    assert isinstance(PolicyDenied(403, "no"), Refusal)


def test_faults_stay_faults() -> None:
    assert not issubclass(ConfigError, Refusal) and not issubclass(LaunchError, Refusal)
