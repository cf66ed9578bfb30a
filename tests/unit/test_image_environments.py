"""Images on one machine: what each image stands for, what the spawn page and the REST API say about it.

What an image's environment can run, checked on real environments, is in
tests/integration/test_image_environments.py.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from hubforge.catalog import load_catalog
from hubforge.config import ConfigError, load_config, validate
from hubforge.server_extension.app import use_image_python
from hubforge.spawner_profiles.local.spawn_page import tier_cards


def test_the_spawn_page_disables_images_that_cannot_run_and_picks_one_that_can() -> None:
    catalog = load_catalog(load_config(environ={}))
    tiers = [catalog.get("interactive"), catalog.get("training")]
    snapshot = SimpleNamespace(tiers={})
    reasons = {
        "pytorch": "no environment for it on this machine",
        "tensorflow": "no environment for it on this machine",
    }
    interactive, training = tier_cards(tiers, snapshot, reasons.get)
    assert [(i["key"], i["unavailable"]) for i in interactive["images"]] == [
        ("scipy", ""),
        ("pytorch", "no environment for it on this machine"),
    ]
    assert interactive["default_image"] == "scipy" and interactive["available"]
    assert not training["available"] and training["no_image"] == "none of its images can run on this machine"


def test_environments_are_absolute_folders_or_the_platform() -> None:
    data = load_config(environ={}).data
    data["spawner"]["local"]["environments"] = {"scipy": "relative/path"}
    with pytest.raises(ConfigError, match=r"spawner\.local\.environments\.scipy"):
        validate(data)
    # An environment for an image no tier offers (the shipped scipy, under tiers of one's own) is harmless.
    data["spawner"]["local"]["environments"] = {"scipy": "platform", "cobol": "/opt/cobol"}
    validate(data)


def kernel_manager(name: str, argv: list[str]) -> SimpleNamespace:
    return SimpleNamespace(kernel_name=name, kernel_spec=SimpleNamespace(argv=list(argv), language="python"))


def test_only_the_servers_own_python_kernel_takes_the_images_python() -> None:
    native = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    km = kernel_manager("python3", native)
    assert use_image_python(km, "/opt/envs/torch/bin/python")
    assert km.kernel_spec.argv == ["/opt/envs/torch/bin/python", *native[1:]]
    theirs = kernel_manager("my-env", ["/home/alice/env/bin/python", *native[1:]])  # a kernelspec she installed
    assert not use_image_python(theirs, "/opt/envs/torch/bin/python")
    assert theirs.kernel_spec.argv[0] == "/home/alice/env/bin/python"
    untouched = kernel_manager("python3", native)
    assert not use_image_python(untouched, "")  # the platform's own environment
    assert untouched.kernel_spec.argv == native
