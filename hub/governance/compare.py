"""What the decision page weighs: a deploy request's model version against what is in production.

The comparison itself (which version is in production, the metrics side by side) is
:mod:`hubforge.modelcard.compare`, which the kernel's ``ApprovalQueue`` shows too. This
module reads what it needs through the service's :class:`~.evidence.EvidenceSource`, as
the governance service's own MLflow identity, each read in a worker thread, and marks the
metrics that miss the platform's thresholds as the default deploy policy judges them.
Nothing here fails the page: what cannot be read becomes one line that the page shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from hubforge.errors import HubforgeError
from hubforge.modelcard.compare import ALIASES, MetricChange, metric_diff, production_version

from .approvals import read_evidence
from .evidence import Evidence, EvidenceSource
from .model import ApprovalRequest

__all__ = ["Comparison", "MetricRow", "compare", "metric_rows", "threshold_problem"]

#: A metric's threshold, as ``services.governance.thresholds`` gives it: ``{"min": n}``, ``{"max": n}``.
Threshold = Mapping[str, float]


@dataclass(frozen=True)
class Comparison:
    """A deploy request's version (``candidate``) and what is in its stage.

    ``production`` is None when nothing is known to be there; ``version`` and ``source``
    say which version that is and where that comes from; ``problem`` says why what is
    there could not be read.
    """

    candidate: Evidence
    production: Evidence | None = None
    version: str | None = None
    source: str = ""
    problem: str = ""


async def compare(
    source: EvidenceSource,
    request: ApprovalRequest,
    deployed: Callable[[], Awaitable[Sequence[ApprovalRequest]]],
) -> Comparison:
    """The comparison for deploy request ``request``.

    What is in its stage is the version the stage's alias names, else the first of the
    ``deployed`` requests (newest first; only called when no alias says). Without the
    candidate's evidence, production is not looked up: MLflow is what failed.
    """
    model, version = str(request.model), str(request.version)
    candidate = await read_evidence(source, model, version)
    if not candidate.available:
        return Comparison(candidate)
    try:
        alias = await asyncio.to_thread(source.alias_version, model, ALIASES[request.kind])
    except HubforgeError as exc:
        return Comparison(candidate, problem=f"what is in {request.stage} could not be read: {exc}")
    found = production_version(alias, [] if alias else [r.to_json() for r in await deployed()])
    if found is None:
        return Comparison(candidate)
    there = candidate if found[0] == version else await read_evidence(source, model, found[0])
    return Comparison(candidate, there, version=found[0], source=found[1])


def threshold_problem(value: float | None, limit: Threshold) -> str:
    """Why ``value`` misses ``limit``, as the default deploy policy says it; empty when it meets it."""
    if value is None:
        return "not logged"
    if "min" in limit and value < limit["min"]:
        return f"below the required {limit['min']:g}"
    if "max" in limit and value > limit["max"]:
        return f"above the allowed {limit['max']:g}"
    return ""


@dataclass(frozen=True)
class MetricRow:
    """One line of the page's metric table: the change, and the threshold it meets or misses."""

    change: MetricChange
    limit: Threshold | None = None
    problem: str = ""


def metric_rows(comparison: Comparison, thresholds: Mapping[str, Threshold]) -> list[MetricRow]:
    """Every metric of either version, and every metric with a threshold (logged or not)."""
    there = comparison.production
    changes = metric_diff(comparison.candidate.metrics, there.metrics if there and there.available else None)
    named = {change.name for change in changes}
    changes += [MetricChange(name, None, None) for name in sorted(set(thresholds) - named)]
    rows = []
    for change in changes:
        limit = thresholds.get(change.name)
        problem = threshold_problem(change.candidate, limit) if limit is not None else ""
        rows.append(MetricRow(change, limit, problem))
    return rows
