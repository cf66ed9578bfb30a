"""A platform.yaml of a test's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


#: An OAuth login (an identity provider that names each person's groups): what Kubernetes needs.
OAUTH = {
    "type": "oauth",
    "oauth": {
        "client_id": "hubforge",
        "authorize_url": "https://idp.example.org/authorize",
        "token_url": "https://idp.example.org/token",
        "userdata_url": "https://idp.example.org/userinfo",
        "persona_claim": "groups",
    },
}

#: A hub image built from images/hub/Dockerfile, as an operator names it in platform.yaml.
HUB_IMAGE = "registry.example.org/hubforge-hub:0.1.0"


def kubernetes_platform(tmp_path: Path, extra: dict[str, Any] | None = None) -> Path:
    """A platform.yaml Kubernetes renders from (an OAuth login, the public address, a hub
    image), with ``extra`` merged over it; its data folder under ``tmp_path``."""
    from hubforge.config import merge

    data = {
        "data_dir": str(tmp_path / "data"),
        "hub": {"public_url": "https://hub.example.org"},
        "auth": OAUTH,
        "spawner": {"kubernetes": {"hub_image": HUB_IMAGE}},
    }
    return write(tmp_path, merge(data, extra or {}))
