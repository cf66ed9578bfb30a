"""The Zero to JupyterHub chart as its hub pod runs it, without a cluster.

The chart is vendored at one release (``vendor/z2jh/``, see its README), whole: its
values, schema and templates, and the two files its hub pod runs,
``jupyterhub_config.py`` and ``z2jh.py``. :func:`chart_hub_config` merges values over
the chart's as helm does, lays out what the chart's Secret and ConfigMap would mount
(with the secrets the chart generates), and runs the chart's ``jupyterhub_config.py``
in this process: the hub's configuration as the hub pod would build it, our
``hub.extraConfig`` included. ``hubforge profiles render`` builds its pod from it, and
the tests check that what ``hubforge k8s render`` writes is what the chart runs
(and ``helm lint`` the chart with it).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import jsonschema
import yaml
from traitlets.config import Config

__all__ = [
    "CHART_APP_VERSION",
    "CHART_VERSION",
    "RELEASE",
    "chart_hub_config",
    "chart_values",
    "helm_merge",
    "values_errors",
]

CHART = Path(__file__).parent / "vendor" / "z2jh"
#: The chart release vendored, and the JupyterHub version its hub image runs.
CHART_VERSION = "4.4.0"
CHART_APP_VERSION = "5.5.0"
#: The release name the install guide uses (``helm upgrade --install hubforge ...``).
RELEASE = "hubforge"
#: The chart's resource names (``fullnameOverride: ""``: no prefix), as its ConfigMap has them.
NAMES = ("hub", "proxy-api", "proxy-http", "proxy-public", "user-scheduler", "singleuser", "hub-pvc")
#: What Kubernetes sets in the hub pod's environment for the chart's Services.
SERVICE_ENV = {"HUB_SERVICE_PORT": "8081", "PROXY_API_SERVICE_PORT": "8001", "PROXY_PUBLIC_SERVICE_PORT": "80"}


def chart_values() -> dict[str, Any]:
    """The chart's own ``values.yaml``, as helm hands it to the templates: keys whose value
    is ``null`` (``nameOverride:``, ...) are left out."""
    values: dict[str, Any] = _without_nulls(yaml.safe_load((CHART / "values.yaml").read_text()))
    return values


def _without_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    return value


def helm_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base`` as helm merges values: maps deep, anything else replaced,
    ``null`` removing the key."""
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def values_errors(values: Mapping[str, Any]) -> list[str]:
    """What the chart's ``values.schema.yaml`` says of merged ``values`` (empty: valid)."""
    schema = yaml.safe_load((CHART / "values.schema.yaml").read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


@contextmanager
def chart_hub_config(
    values: Mapping[str, Any], env: Mapping[str, str], workdir: Path | None = None
) -> Iterator[Config]:
    """The hub's traitlets config as the chart's ``jupyterhub_config.py`` builds it in the hub
    pod from merged ``values``; ``env`` is added to the pod's environment (the chart's own
    ``extraEnv`` is not: pass what the hub's code reads). The chart's mounts are written under
    ``workdir`` (a temporary folder by default)."""
    with tempfile.TemporaryDirectory(prefix="hubforge-chart-") as scratch:
        etc = Path(workdir or scratch) / "etc-jupyterhub"
        _mounts(etc, values, env.get("POD_NAMESPACE", "default"))
        # z2jh.py reads its mounts under /usr/local/etc/jupyterhub: the same module, pointed here.
        z2jh_file = CHART / "files" / "hub" / "z2jh.py"
        z2jh = types.ModuleType("z2jh")
        z2jh.__file__ = str(z2jh_file)
        source = z2jh_file.read_text().replace("/usr/local/etc/jupyterhub", str(etc))
        exec(compile(source, str(z2jh_file), "exec"), z2jh.__dict__)
        c = Config()
        hub_config = CHART / "files" / "hub" / "jupyterhub_config.py"
        with (
            mock.patch.dict(sys.modules, {"z2jh": z2jh}),
            mock.patch.object(sys, "path", list(sys.path)),
            mock.patch.dict(os.environ, {**SERVICE_ENV, **env}),
            # The chart's hub image has pycurl; its configuration only names the client class.
            mock.patch("tornado.httpclient.AsyncHTTPClient.configure"),
            # Its "Loading ..." lines are the hub pod's log, not this command's output.
            contextlib.redirect_stdout(io.StringIO()),
        ):
            code = compile(hub_config.read_text(), str(hub_config), "exec")
            exec(code, {"get_config": lambda: c, "__file__": str(hub_config), "__name__": "__config__"})
            yield c


def _mounts(etc: Path, values: Mapping[str, Any], namespace: str) -> None:
    """The chart's hub Secret (values, generated secrets) and ConfigMap (resource names)."""
    secret, config = etc / "secret", etc / "config"
    secret.mkdir(parents=True)
    config.mkdir()
    in_secret = {
        **values,
        "Chart": {"Name": "jupyterhub", "Version": CHART_VERSION, "AppVersion": CHART_APP_VERSION},
        "Release": {"Name": RELEASE, "Namespace": namespace, "Service": "Helm"},
    }
    (secret / "values.yaml").write_text(yaml.safe_dump(in_secret))
    generated = {
        "hub.config.ConfigurableHTTPProxy.auth_token": "proxy-token",
        "hub.config.JupyterHub.cookie_secret": "00" * 32,
        "hub.config.CryptKeeper.keys": "11" * 32,
    }
    for key in values.get("hub", {}).get("services", {}):
        generated[f"hub.services.{key}.apiToken"] = f"token-of-{key}"
    for key, value in generated.items():
        (secret / key).write_text(value)
    for name in NAMES:
        (config / name).write_text(name)
