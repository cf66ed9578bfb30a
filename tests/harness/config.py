"""A platform.yaml of a test's own."""

from __future__ import annotations

from pathlib import Path

import yaml


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path
