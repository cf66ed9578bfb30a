"""`helm lint` of the Zero to JupyterHub chart (vendored at 4.4.0) with the values
`hubforge k8s render` writes, through Helm's own Go library (helm-sdkpy): every template
renders with them, and the chart's schema accepts them, as `helm install` would check.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from harness.config import kubernetes_platform
from hubforge.config import load_config
from hubforge.spawner_profiles.kubernetes.chart import CHART, CHART_VERSION, helm_merge
from hubforge.spawner_profiles.kubernetes.render import render_k8s


def _lint(chart: Path, values: dict[str, Any]) -> dict[str, Any]:
    """``helm lint`` of a copy of ``chart`` whose values are ``values``; with the chart's schema
    as its release packages it (``values.schema.json``), so values are checked against it."""
    import helm_sdkpy

    copy = chart.parent / "linted"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(chart, copy)
    (copy / "values.yaml").write_text(yaml.safe_dump(values))
    schema = yaml.safe_load((copy / "values.schema.yaml").read_text())
    (copy / "values.schema.json").write_text(json.dumps(schema))
    result: dict[str, Any] = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration(namespace="hubforge")).run(str(copy)))
    return result


def test_helm_lints_the_chart_with_our_values(tmp_path: Path) -> None:
    render_k8s(load_config(kubernetes_platform(tmp_path), environ={}), tmp_path / "out")
    (ours,) = yaml.safe_load_all((tmp_path / "out" / "helm-values.yaml").read_text())
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    assert yaml.safe_load((chart / "Chart.yaml").read_text())["version"] == CHART_VERSION
    base = yaml.safe_load((chart / "values.yaml").read_text())

    linted = _lint(chart, helm_merge(base, ours))
    assert (linted["TotalChartsLinted"], linted["Messages"], linted["Errors"]) == (1, None, None), linted

    # Not vacuous: a value the schema refuses, and one a template cannot render, are caught.
    for broken in ({"singleuser": {"startTimeout": "soon"}}, {"hub": {"networkPolicy": {"ingress": "everyone"}}}):
        assert _lint(chart, helm_merge(helm_merge(base, ours), broken))["Errors"], broken
