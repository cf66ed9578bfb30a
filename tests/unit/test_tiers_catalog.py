"""The tier catalog: the shipped tiers, one-line errors naming the tier and key, who sees what."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from hubforge.catalog import (
    ChoiceError,
    check_choice,
    load_catalog,
    personas_for_groups,
    tiers_for,
)
from hubforge.config import PlatformConfig, default_config_text, load_config, merge, schema, validate
from hubforge.errors import ConfigError
from hubforge.hardware import GPU_MODELS, cpu_cores, memory_bytes
from hubforge.personas import persona_names

DEFAULT = yaml.safe_load(default_config_text())


def config(overrides: dict[str, Any] | None = None, *, schema_check: bool = True) -> PlatformConfig:
    """The default config with ``overrides`` merged over it, as ``platform.yaml``."""
    data = merge(DEFAULT, overrides or {})
    if schema_check:
        validate(data, "platform.yaml")
    return PlatformConfig(data=data, source="platform.yaml", data_dir=Path("/nonexistent"))


def with_tier(slug: str, change: dict[str, Any], **top: Any) -> PlatformConfig:
    """The default config with one default tier changed (a nested merge of ``change``)."""
    tiers = copy.deepcopy(DEFAULT["tiers"])
    tiers[slug] = merge(tiers[slug], change, _top=False)
    return config({"tiers": tiers, **top})


def one_line_error(make: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_catalog(make())
    message = str(info.value)
    assert "\n" not in message
    return message


# --- the shipped tiers ---------------------------------------------------------


def test_default_catalog_has_the_four_seed_tiers_and_the_analysts_apps() -> None:
    catalog = load_catalog(load_config(environ={}))
    assert catalog.slugs == ["interactive", "training", "hpo", "finetune", "apps"]
    interactive, training, hpo, finetune, apps = catalog.tiers
    assert interactive.queue is None and interactive.capacity is None  # reserved
    assert interactive.resources.gpu_resource == "nvidia.com/mig-1g.10gb"
    assert interactive.personas == frozenset(persona_names()) - {"analyst"}  # no notebooks for analysts
    assert {t.interface for t in catalog.tiers} == {"lab", "apps"} and apps.interface == "apps"
    assert apps.personas == {"analyst"} and apps.resources.gpus.max == 0 and apps.queue is None
    assert {t.queue for t in (training, hpo, finetune)} == {"training", "hpo", "finetune"}
    assert training.resources.model == "nvidia-h100-80gb"
    assert hpo.resources.gpus.min >= 2  # multi-GPU sweeps
    assert finetune.resources.model == "nvidia-a100-80gb"
    assert finetune.personas == {"ml-engineer", "ml-lead", "platform-admin"}
    assert training.personas == hpo.personas == {"data-scientist", "ml-engineer", "ml-lead", "platform-admin"}
    assert finetune.fair_share_weight < training.fair_share_weight  # "limited"
    assert training.quota["data-scientist"] == 8
    assert catalog.max_servers_per_user == 1


def test_schema_knows_every_gpu_model_and_persona() -> None:
    tier = schema()["properties"]["tiers"]["additionalProperties"]["properties"]
    assert set(tier["resources"]["properties"]["model"]["enum"]) == {*GPU_MODELS, None}
    assert tier["personas"]["items"]["enum"] == persona_names()


def test_quantities() -> None:
    assert memory_bytes("8G") == 8 * 1024**3
    assert memory_bytes("1.5K") == 1536
    assert cpu_cores("500m") == 0.5
    assert cpu_cores(2) == 2.0


def test_max_servers_per_user_comes_from_the_spawner_section() -> None:
    cfg = config({"spawner": {"max_servers_per_user": 3}}, schema_check=False)
    assert load_catalog(cfg).max_servers_per_user == 3


# --- errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slug", "change", "expected"),
    [
        (
            "training",
            {"images": {"default": "torch"}},
            "platform.yaml: tiers.training.images.default: 'torch' is not among the image choices "
            "(pytorch, tensorflow)",
        ),
        (
            "training",
            {"resources": {"gpus": {"min": 4, "max": 2, "default": 2}}},
            "platform.yaml: tiers.training.resources.gpus.min: 4 is above max 2",
        ),
        (
            "training",
            {"resources": {"gpus": {"min": 1, "max": 4, "default": 6}}},
            "platform.yaml: tiers.training.resources.gpus.default: 6 is outside min..max (1..4)",
        ),
        (
            "hpo",
            {"resources": {"gpus": {"max": 16}}, "capacity": {"gpus": 64}},
            "platform.yaml: tiers.hpo.resources.gpus.max: 16 is more than one nvidia-a100-40gb node offers (8 GPUs)",
        ),
        (
            "interactive",
            {"resources": {"gpus": {"max": 60}}},
            "tiers.interactive.resources.gpus.max: 60 is more than one nvidia-a100-80gb node offers "
            "(56 1g.10gb slices)",
        ),
        (
            "interactive",
            {"resources": {"mig_profile": "1g.5gb"}},
            "platform.yaml: tiers.interactive.resources.mig_profile: '1g.5gb' is not a MIG profile of nvidia-a100-80gb "
            "(1g.10gb, 1g.20gb, 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb)",
        ),
        (
            "interactive",
            {"resources": {"model": "nvidia-t4"}, "node_selector": {}},
            "tiers.interactive.resources.mig_profile: '1g.10gb' is not a MIG profile of nvidia-t4 "
            "(none: it has no MIG)",
        ),
        (
            "interactive",
            {"resources": {"model": None, "mig_profile": None}},
            "tiers.interactive.resources.gpus.max: 1 GPUs on a tier without resources.model",
        ),
        (
            "training",
            {"resources": {"memory": {"guarantee": "256G"}}},
            "platform.yaml: tiers.training.resources.memory.guarantee: 256G is above the limit 128G",
        ),
        (
            "training",
            {"resources": {"cpu": {"guarantee": "32000m"}}},
            "platform.yaml: tiers.training.resources.cpu.guarantee: 32 is above the limit 16",
        ),
        (
            "training",
            {"node_selector": {"nvidia.com/gpu.product": "Tesla-T4"}},
            "tiers.training.node_selector.nvidia.com/gpu.product: 'Tesla-T4' does not match resources.model "
            "nvidia-h100-80gb (NVIDIA-H100-80GB-HBM3)",
        ),
        (
            "training",
            {"groups": ["fraud-team"]},
            "platform.yaml: tiers.training.groups: no persona mapping or user in the config knows group 'fraud-team'",
        ),
        (
            "finetune",
            {"quota": {"llm-team": 4}},
            "platform.yaml: tiers.finetune.quota.llm-team: no persona mapping or user in the config knows group "
            "'llm-team'",
        ),
        (
            "hpo",
            {"queue": "training"},
            "platform.yaml: tiers.hpo.queue: 'training' is already the queue of tier 'training'",
        ),
        (
            "finetune",
            {"capacity": {"gpus": 4}},
            "platform.yaml: tiers.finetune.capacity.gpus: 4 is below resources.gpus.max 8",
        ),
        (
            "interactive",
            {"capacity": {"gpus": 4, "cpu": 8, "memory": "32G"}},
            "platform.yaml: tiers.interactive.capacity: only a queued tier (with a queue) has a Kueue capacity",
        ),
    ],
)
def test_catalog_errors_are_one_line_naming_tier_and_key(slug: str, change: dict[str, Any], expected: str) -> None:
    assert expected in one_line_error(lambda: with_tier(slug, change))


def test_queued_tier_without_capacity() -> None:
    tiers = copy.deepcopy(DEFAULT["tiers"])
    del tiers["training"]["capacity"]
    message = one_line_error(lambda: config({"tiers": tiers}))
    assert message == (
        "platform.yaml: tiers.training.capacity: a queued tier needs its Kueue nominal quota (gpus, cpu, memory)"
    )


def test_unknown_persona_is_refused_by_the_catalog_even_without_the_schema() -> None:
    tiers = copy.deepcopy(DEFAULT["tiers"])
    tiers["hpo"]["personas"] = ["data-scientist", "wizard"]
    message = one_line_error(lambda: config({"tiers": tiers}, schema_check=False))
    assert message.startswith("platform.yaml: tiers.hpo.personas: unknown persona 'wizard' (known: data-scientist,")


def test_a_group_known_from_users_or_persona_mappings_is_accepted() -> None:
    users = {**DEFAULT["users"], "zoe": {"groups": ["fraud-team"]}}
    cfg = with_tier("training", {"groups": ["fraud-team"], "quota": {"fraud-team": 2}}, users=users)
    assert load_catalog(cfg).get("training").quota["fraud-team"] == 2
    cfg = with_tier("hpo", {"groups": ["ds-team"]}, personas={"data-scientist": {"groups": ["ds-team"]}})
    assert "ds-team" in load_catalog(cfg).get("hpo").groups


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        ({"resources": {"model": "nvidia-b200"}}, "tiers.training.resources.model: 'nvidia-b200' is not one of"),
        ({"colour": "blue"}, "tiers.training.colour: unknown key"),
        ({"personas": ["wizard"]}, "tiers.training.personas.0: unknown persona 'wizard'"),
        ({"resources": {"memory": {"limit": "8GB"}}}, "tiers.training.resources.memory.limit: '8GB' does not match"),
        ({"idle_timeout": -1}, "tiers.training.idle_timeout: -1 is less than the minimum of 0"),
        ({"queue": "Training Queue"}, "tiers.training.queue: 'Training Queue' is not valid under any"),
    ],
)
def test_schema_errors_in_a_tier_name_the_key(tmp_path: Path, tier: dict[str, Any], expected: str) -> None:
    tiers = copy.deepcopy(DEFAULT["tiers"])
    tiers["training"] = merge(tiers["training"], tier, _top=False)
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump({"tiers": tiers}))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "\n" not in str(info.value)
    assert expected in str(info.value)


def test_tier_slug_must_be_a_dns_label(tmp_path: Path) -> None:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump({"tiers": {"GPU_big": DEFAULT["tiers"]["training"]}}))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "tiers.GPU_big: invalid name 'GPU_big'" in str(info.value)


# --- who sees what ------------------------------------------------------------------


def visible(cfg: PlatformConfig, user: str) -> list[str]:
    groups = cfg.data["users"][user]["groups"]
    personas = personas_for_groups(cfg.group_personas(), groups)
    return [t.slug for t in tiers_for(load_catalog(cfg), groups, personas)]


def test_each_persona_sees_the_tiers_the_config_allows() -> None:
    cfg = config({"users": {**DEFAULT["users"], "ann": {"groups": ["analyst"]}}})
    assert visible(cfg, "alice") == ["interactive", "training", "hpo"]  # data-scientist: never finetune
    assert visible(cfg, "bob") == ["interactive", "training", "hpo", "finetune"]  # ml-engineer
    assert visible(cfg, "carol") == ["interactive", "training", "hpo", "finetune"]  # ml-lead
    assert visible(cfg, "dan") == ["interactive"]  # data-steward
    assert visible(cfg, "erin") == ["interactive", "training", "hpo", "finetune"]  # platform-admin
    assert visible(cfg, "ann") == ["apps"]  # analyst: published apps, no notebook tier


def test_an_analyst_sees_nothing_when_the_config_gives_them_nothing() -> None:
    everyone_but_analysts = [p for p in persona_names() if p != "analyst"]
    cfg = with_tier(
        "apps",
        {"personas": everyone_but_analysts},
        users={**DEFAULT["users"], "ann": {"groups": ["analyst"]}},
    )
    assert visible(cfg, "ann") == []
    with pytest.raises(ChoiceError) as info:
        check_choice(load_catalog(cfg), ["analyst"], ["analyst"], None, {})
    assert info.value.status == 403
    assert "no compute tier is open to your groups" in str(info.value)


def test_a_group_grants_a_tier_without_a_persona() -> None:
    users = {**DEFAULT["users"], "zoe": {"groups": ["llm-team"]}}
    cfg = with_tier("finetune", {"groups": ["llm-team"]}, users=users)
    assert visible(cfg, "zoe") == ["finetune"]
    assert "finetune" not in visible(cfg, "alice")


# --- checking a choice -----------------------------------------------------------------

ALICE = (["data-scientist"], ["data-scientist"])


def test_defaults_are_filled_in() -> None:
    catalog = load_catalog(config())
    choice = check_choice(catalog, *ALICE, None, {})
    assert (choice.tier.slug, choice.image_key, choice.gpus) == ("interactive", "scipy", 0)
    choice = check_choice(catalog, *ALICE, "training", {"image": "tensorflow", "gpus": "2"})
    assert choice.image == "quay.io/jupyter/tensorflow-notebook:cuda-latest"
    assert choice.gpus == 2


@pytest.mark.parametrize(
    ("tier", "options", "status", "message"),
    [
        ("finetune", {}, 403, "tier 'finetune' is not open to you (it is for: ml-engineer, ml-lead, platform-admin)"),
        ("gpu-party", {}, 400, "no such tier 'gpu-party' (yours: interactive, training, hpo)"),
        ("training", {"image": "evil/miner:latest"}, 400, "image 'evil/miner:latest' is not among the choices"),
        ("training", {"gpus": 8}, 400, "tier 'training' allows 1 to 4 GPUs, not 8"),
        ("training", {"gpus": "0"}, 400, "tier 'training' allows 1 to 4 GPUs, not 0"),
        ("training", {"gpus": "two"}, 400, "gpus must be a whole number, not 'two'"),
        ("training", {"gpus": True}, 400, "gpus must be a whole number, not True"),
        ("training", {"gpus": "-1"}, 400, "gpus must be a whole number, not '-1'"),
        ("training", {"node_selector": "x"}, 400, "unknown option 'node_selector' for tier 'training'"),
    ],
)
def test_forged_choices_are_refused(tier: str, options: dict[str, Any], status: int, message: str) -> None:
    with pytest.raises(ChoiceError) as info:
        check_choice(load_catalog(config()), *ALICE, tier, options)
    assert info.value.status == status
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_public_api_is_explicit() -> None:
    import hubforge.catalog as catalog
    import hubforge.hardware as hardware
    import hubforge.spawner_profiles.cli as cli
    import hubforge.spawner_profiles.kubernetes.render as k8s_render
    import hubforge.spawner_profiles.kubernetes.spawner as kube

    for module in (catalog, cli, hardware, k8s_render, kube):
        assert module.__all__, module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
