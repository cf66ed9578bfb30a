"""A kept fit entry (what a kernel leaves for the server's replay) to vary field by field."""

from __future__ import annotations

from hubforge.server_extension.kept_fits import KeptFit


def fit(**changes: object) -> KeptFit:
    base = KeptFit(
        tracking_uri="http://mlflow",
        experiment_name="/Users/alice/a.ipynb",
        integration="sklearn",
        method="fit",
        name="LogisticRegression",
        started_ms=1,
        ended_ms=2,
        run_id="abc123",
        tags={"hubforge.notebook": "a.ipynb"},
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base
