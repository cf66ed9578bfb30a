"""The platform config with notebook tracking switched on or off, globally and per tier.

Shared by the unit tests of the switch and the integration tests that run it for real
(a local spawner's process, a jupyter-server with a tier's environment).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from hubforge.config import PlatformConfig, default_config_text, merge, validate

DEFAULT = yaml.safe_load(default_config_text())


def config(tracking: bool | None = None, **tier_tracking: bool) -> PlatformConfig:
    """The default config with ``tracking.enabled`` and some tiers' ``tracking`` set.

    A tier named here but not in the default is a copy of ``interactive``
    (CPU by default, open to every persona, never queued).
    """
    tiers = copy.deepcopy(DEFAULT["tiers"])
    for slug, value in tier_tracking.items():
        tiers.setdefault(slug, copy.deepcopy(DEFAULT["tiers"]["interactive"]))["tracking"] = value
    overrides: dict[str, Any] = {"tiers": tiers}
    if tracking is not None:
        overrides["tracking"] = {"enabled": tracking}
    data = merge(DEFAULT, overrides)
    validate(data, "platform.yaml")
    return PlatformConfig(data=data, source="platform.yaml", data_dir=Path("/nonexistent"))
