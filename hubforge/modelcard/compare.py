"""A model version against what is in production: which version that is, and the metrics side by side.

Pure and standard-library only, shared by the governance service's decision page and the
kernel's ``ApprovalQueue`` widget so that an approver reads the same comparison in both:
the hub side and the kernel side never import each other, so it lives here, below both.

What is "in production" for a deploy request is the version the registered model's
reserved alias names (:data:`ALIASES`: ``production`` for production requests,
``staging`` for staging), which the governance service's deployments set; until one
does, the version of the newest request the caller passes as approved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ALIASES", "MetricChange", "format_metric", "metric_diff", "production_version"]

#: The registered model alias naming what serves each deploy request kind.
ALIASES = {"deploy-staging": "staging", "deploy-production": "production"}


@dataclass(frozen=True)
class MetricChange:
    """One metric of the version asked for, and of the one in production (None: not logged)."""

    name: str
    candidate: float | None
    production: float | None

    @property
    def delta(self) -> float | None:
        """candidate - production, when both are numbers."""
        if self.candidate is None or self.production is None:
            return None
        return self.candidate - self.production


def metric_diff(candidate: Mapping[str, float], production: Mapping[str, float] | None) -> list[MetricChange]:
    """Every metric of either version, by name; production's all None when nothing is in production."""
    other = production or {}
    names = sorted(set(candidate) | set(other))
    return [MetricChange(name, candidate.get(name), other.get(name)) for name in names]


def production_version(alias: str | None, approved: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(version, where that comes from) of what is in production: the alias's version, else the
    first of the ``approved`` requests (newest first, as the API lists them); None for nothing."""
    if alias:
        return alias, "the registered model's alias"
    if approved and approved[0].get("version"):
        newest = approved[0]
        return str(newest["version"]), f"approved {str(newest.get('decided') or '')[:10]} by {newest.get('decided_by')}"
    return None


def format_metric(value: float | None, sign: bool = False) -> str:
    """A metric as a person reads it: four significant digits, ``—`` when it was not logged;
    ``sign`` writes ``+`` before a rise (for a change)."""
    if value is None:
        return "—"
    if not math.isfinite(value):
        return str(value)
    return f"{value:+.4g}" if sign else f"{value:.4g}"
