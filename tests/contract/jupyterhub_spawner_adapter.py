"""pytest plugin: JupyterHub's own spawner tests, run against hubforge's one-machine spawner.

JupyterHub ships the tests its spawners must pass (``jupyterhub/tests/test_spawner.py``) and
the tests of the single-user server a spawner starts (``test_singleuser.py``).
They build spawners with ``SimpleLocalProcessSpawner``; this plugin puts
:class:`ContractSpawner` in its place: a :class:`LocalTierSpawner` configured with the
platform's default tier catalog and persona groups, its GPU database in a temporary folder.
JupyterHub's mock hub (the ``app`` fixture) spawns with :class:`HubContractSpawner`, ours
too. ``make test-jupyterhub`` runs it in a pytest process of its own (JupyterHub's fixtures need
pytest-asyncio in auto mode; see ``pytest.ini`` here)::

    pytest -c tests/contract/pytest.ini -p jupyterhub_spawner_adapter \
        --pyargs jupyterhub.tests.test_spawner jupyterhub.tests.test_api \
        jupyterhub.tests.test_singleuser

From ``test_api.py`` only the spawn, options and progress tests run (:data:`API_TESTS`):
the rest of the REST API does not involve the spawner.

Adaptations, each because the platform's spawner or server differs where the tests do not look:

- JupyterHub's test users are in no group that grants a persona (``visitors`` at most),
  and every tier is open by persona: such a user counts as a data scientist (``ContractSpawner.user_groups``).
- ``full_spawn`` tests run the platform's own single-user server (``hubforge-singleuser``,
  hubforge's server extension loaded), opening ``/lab`` (the platform's default URL) instead of ``/tree``,
  which comes from the notebook package the platform does not install; the tests read the
  URL from the spawner.
- The tests start servers with no options; a hub would have sent the spawn page's
  choice: they start on the ``interactive`` tier (``ContractSpawner.start``).
- The mock hub waits up to 60 s for a spawn before answering 202, not 10 s
  (:data:`SLOW_SPAWN_TIMEOUT`): the tests that expect the spawn done by then measured the
  machine's load, not the spawner.

Deviations (:data:`DEVIATIONS`), each marked expected to fail with its reason.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import jupyterhub.tests.mocking as mocking
import jupyterhub.tests.test_spawner as shipped
from traitlets import default

from hubforge.catalog import load_catalog
from hubforge.config import load_config
from hubforge.spawner_profiles.local.spawner import LocalTierSpawner

_CFG = load_config(None)
_GPU_DB = Path(tempfile.mkdtemp(prefix="hubforge-contract-")) / "gpus.sqlite"


class ContractSpawner(LocalTierSpawner):
    """The one-machine spawner as the platform configures it, for JupyterHub's test user."""

    #: Spawners made, by class: the run fails if the shipped tests never used ours.
    made: ClassVar[Counter[str]] = Counter()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ContractSpawner.made[type(self).__name__] += 1

    @default("tier_catalog")
    def _default_tier_catalog(self) -> Any:
        return load_catalog(_CFG)

    @default("group_personas")
    def _default_group_personas(self) -> dict[str, list[str]]:
        return _CFG.group_personas()

    @default("gpu_db")
    def _default_gpu_db(self) -> str:
        return str(_GPU_DB)

    def user_groups(self) -> list[str]:
        groups: list[str] = super().user_groups()
        if not any(self.group_personas.get(group) for group in groups):
            groups.append("data-scientist")
        return groups

    async def start(self) -> Any:
        if not self.user_options:
            self.user_options = {"profile": "interactive"}
        return await super().start()


#: The tests of ``test_api.py`` that involve the spawner: names containing one of these.
API_TESTS = ("spawn", "option", "progress")

#: Shipped tests whose expectation the platform's spawner deliberately does not meet, and why.
DEVIATIONS = {
    "test_spawn": (
        "the request's options {'s': ['value'], 'i': 5} are refused with 400 naming the unknown option: "
        "a tier takes only profile, image and gpus, so a forged option never reaches a spawner"
    ),
    "test_user_options": "the same arbitrary options as test_spawn, refused with 400 for the same reason",
    "test_nbclassic_control_panel": (
        "the classic notebook's /tree page and its control-panel link are not installed: the platform's "
        "servers run JupyterLab, whose File menu carries the hub's control panel"
    ),
    "test_predefined_options_from_form[default]": (
        "the default options_from_form reads the spawn page's tier cards (profile, image_<tier>, "
        "gpus_<tier>) instead of passing the form through; a configured 'passthrough' or 'simple' "
        "still applies (the other two cases)"
    ),
}


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    import pytest

    kept, dropped = [], []
    for item in items:
        spawner_test = item.module.__name__ != "jupyterhub.tests.test_api" or any(w in item.name for w in API_TESTS)
        (kept if spawner_test else dropped).append(item)
        if (reason := DEVIATIONS.get(item.name)) is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


class HubContractSpawner(ContractSpawner, mocking.MockSpawner):
    """The spawner of JupyterHub's mock hub (its ``app`` fixture): ours, with the mock's test
    hooks (its environment and token handling), still starting JupyterHub's tiny mock server."""

    @default("cmd")
    def _default_cmd(self) -> list[str]:
        return mocking.MockSpawner._cmd_default(self)  # type: ignore[no-any-return]


class HubInstrumentedSpawner(ContractSpawner, mocking.InstrumentedSpawner):
    """The spawner of the mock hub's ``full_spawn`` tests: ours, starting the platform's own
    single-user server (``hubforge-singleuser``, with hubforge's server extension) as a hub would, plus
    JupyterHub's test extension (``JUPYTERHUB_SINGLEUSER_TEST_EXTENSION``)."""

    @default("default_url")
    def _default_url(self) -> str:
        return "/lab"  # the platform's servers open JupyterLab; notebook 7's /tree is not installed


#: Seconds the mock hub's spawn request waits for the spawn before answering 202 (JupyterHub's
#: ``slow_spawn_timeout``, 10 by default). Tests such as ``test_progress_ready_hook_*`` expect
#: the spawn done by then; on a busy two-core machine (the whole suite's lanes at once) a
#: server's start takes longer, and they failed on the machine's speed, not the spawner's
#: behaviour. The tests of the slow path set their own (``no_patience``, ``slow_spawn``).
SLOW_SPAWN_TIMEOUT = 60
_init_tornado_settings = mocking.MockHub.init_tornado_settings


def _patient_tornado_settings(self: Any) -> None:
    self.tornado_settings.setdefault("slow_spawn_timeout", SLOW_SPAWN_TIMEOUT)
    _init_tornado_settings(self)


mocking.MockHub.init_tornado_settings = _patient_tornado_settings  # type: ignore[method-assign]
shipped.SimpleLocalProcessSpawner = ContractSpawner  # type: ignore[misc]
mocking.MockSpawner = HubContractSpawner  # type: ignore[misc]
mocking.InstrumentedSpawner = HubInstrumentedSpawner  # type: ignore[misc]


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    """Fail the run if the shipped tests ran on JupyterHub's spawners instead of ours."""
    modules = {item.module.__name__ for item in getattr(session, "items", [])}
    missing = []
    if modules and not ContractSpawner.made:
        missing.append("a hubforge spawner")
    if "jupyterhub.tests.test_singleuser" in modules and not ContractSpawner.made[HubInstrumentedSpawner.__name__]:
        missing.append("a hubforge spawner for the single-user server tests")
    if missing:
        session.exitstatus = 1
        print(f"\nhubforge: JupyterHub's tests never made {' or '.join(missing)}: the adapter did not take", flush=True)
