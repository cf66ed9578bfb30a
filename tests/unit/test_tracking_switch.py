"""platform.yaml switches notebook tracking off, globally or per tier, and the kernels obey.

``tracking.enabled`` is the platform's switch, a tier's ``tracking`` overrides
it for servers on that tier. Both spawners put ``HUBFORGE_TRACKING=on|off``
into a server's environment; the server extension hands it to every kernel.
Here the config, the tier catalog and the Kubernetes spawner, in process; the
local spawner's process and the whole chain (a jupyter-server with a tier's
environment, a kernel, a real MLflow server) are in
tests/integration/test_tracking_switch.py.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.tracking import DEFAULT, config
from hubforge.catalog import load_catalog, tier_env
from hubforge.config import PlatformConfig, default_config_text, load_config, merge
from hubforge.contract import TRACKING_ENV
from hubforge.errors import ConfigError
from hubforge.spawner_profiles.kubernetes.spawner import offline_spawner, profile_for, render_pod


def tracking_of(cfg: PlatformConfig) -> dict[str, bool]:
    return {tier.slug: tier.tracking for tier in load_catalog(cfg)}


# --- the config ----------------------------------------------------------------------------------


def test_tracking_is_on_by_default_everywhere() -> None:
    cfg = load_config(environ={})
    assert cfg.data["tracking"] == {"enabled": True}
    assert set(tracking_of(cfg).values()) == {True}
    assert "tracking:\n  enabled: true" in default_config_text()


def with_tier_tracking(value: Any) -> dict[str, Any]:
    """The default tiers (``tiers`` replace the default whole) with ``interactive.tracking`` set."""
    tiers = copy.deepcopy(DEFAULT["tiers"])
    tiers["interactive"]["tracking"] = value
    return {"tiers": tiers}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"tracking": {"enabled": "sometimes"}}, "tracking.enabled: 'sometimes' is not of type 'boolean'"),
        ({"tracking": {"enabled": 1}}, "tracking.enabled: 1 is not of type 'boolean'"),
        ({"tracking": False}, "tracking: False is not of type 'object'"),
        ({"tracking": {"enable": False}}, "tracking.enable: unknown key"),
        (with_tier_tracking("off"), "tiers.interactive.tracking: 'off' is not of type 'boolean'"),
    ],
)
def test_bad_values_are_one_line_naming_file_and_key(tmp_path: Path, overrides: dict, expected: str) -> None:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(overrides))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == f"{path}: {expected}"


def test_yaml_on_and_off_are_booleans(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML) reads an unquoted off as false: what an admin would write.
    path = tmp_path / "platform.yaml"
    path.write_text("tracking: {enabled: off}\n")
    assert set(tracking_of(load_config(path, environ={})).values()) == {False}


# --- the tier overrides the platform, both ways ------------------------------------------------------


def test_a_tier_switches_tracking_off_under_a_global_on() -> None:
    assert tracking_of(config(True, training=False)) == {
        "interactive": True,
        "training": False,
        "hpo": True,
        "finetune": True,
        "apps": True,
    }


def test_a_tier_switches_tracking_on_under_a_global_off() -> None:
    assert tracking_of(config(False, interactive=True)) == {
        "interactive": True,
        "training": False,
        "hpo": False,
        "finetune": False,
        "apps": False,
    }


def test_without_mlflow_on_the_platform_nothing_is_tracked() -> None:
    cfg = config(True, interactive=True)
    data = merge(cfg.data, {"services": {"mlflow": {"enabled": False}}})
    off = PlatformConfig(data=data, source="platform.yaml", data_dir=Path("/nonexistent"))
    assert set(tracking_of(off).values()) == {False}


def test_tier_env_carries_the_switch() -> None:
    catalog = load_catalog(config(True, quiet=False))
    assert tier_env(catalog.get("quiet")) == {"HUBFORGE_TIER": "quiet", TRACKING_ENV: "off"}
    assert tier_env(catalog.get("interactive")) == {"HUBFORGE_TIER": "interactive", TRACKING_ENV: "on"}


# --- Kubernetes -----------------------------------------------------------------------------------------


def container_env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def test_kube_profile_and_rendered_pod_carry_the_switch() -> None:
    cfg = config(False, interactive=True)
    catalog = load_catalog(cfg)
    training = profile_for(catalog.get("training"))
    assert training["kubespawner_override"]["environment"] == {"HUBFORGE_TIER": "training", TRACKING_ENV: "off"}
    assert container_env(render_pod(cfg, "alice", "training"))[TRACKING_ENV] == "off"
    assert container_env(render_pod(cfg, "alice", "interactive"))[TRACKING_ENV] == "on"


def test_kube_spawner_reused_across_tiers_resets_the_switch() -> None:
    cfg = config(True, training=False)

    async def environments() -> list[dict[str, Any]]:
        seen = []
        async with offline_spawner(cfg, "alice") as spawner:
            for tier in ("training", "interactive"):
                spawner.user_options = {"profile": tier}
                await spawner.load_user_options()
                seen.append(dict(spawner.environment))
        return seen

    training, interactive = asyncio.run(environments())
    assert (training["HUBFORGE_TIER"], training[TRACKING_ENV]) == ("training", "off")
    assert (interactive["HUBFORGE_TIER"], interactive[TRACKING_ENV]) == ("interactive", "on")
