"""Feast lives in an environment of its own: the platform's never has it, and knows where it is."""

from __future__ import annotations

import importlib.util
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from hubforge.config import load_config
from hubforge.features import FeaturesError
from hubforge.features.environment import feast_python, run_in_feast


def test_the_platforms_environment_has_no_feast() -> None:
    # Installed, Feast would be loaded by every MLflow client (its request-header provider
    # entry point) and would register process-wide sqlite3 adapters.
    assert importlib.util.find_spec("feast") is None
    providers = [e.value for e in entry_points(group="mlflow.request_header_provider")]
    assert not [p for p in providers if p.startswith("feast")]


def test_the_feast_environment_sits_beside_the_platforms_unless_the_config_names_one(tmp_path: Path) -> None:
    assert feast_python(load_config(None, environ={}), "/opt/hub/.venv") == Path("/opt/hub/.venv-feast/bin/python")
    config = tmp_path / "platform.yaml"
    config.write_text("services: {features: {environment: envs/feast}}\n")
    assert feast_python(load_config(config, environ={})) == tmp_path / "envs" / "feast" / "bin" / "python"
    config.write_text("services: {features: {environment: /srv/feast}}\n")
    assert feast_python(load_config(config, environ={})) == Path("/srv/feast/bin/python")


def test_a_missing_feast_environment_is_one_line_saying_how_to_build_it(tmp_path: Path) -> None:
    config = tmp_path / "platform.yaml"
    config.write_text(f"services: {{features: {{environment: {tmp_path / 'nowhere'}}}}}\n")
    with pytest.raises(FeaturesError) as refused:
        run_in_feast(load_config(config, environ={}), ["apply"])
    assert str(refused.value) == (
        f"features: no Feast environment at {tmp_path / 'nowhere'} "
        "(`make install` builds it; services.features.environment names another)"
    )
