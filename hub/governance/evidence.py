"""What a deploy policy weighs about a model version: its model card and its run's metrics.

:class:`Evidence` is the plain value the policy input carries (``input.evidence``). An
:class:`EvidenceSource` finds it; the service calls it from a worker thread. Without a
source (:class:`NoEvidence`) the evidence is unavailable and the default policy refuses
production: a policy never passes for want of looking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Evidence", "EvidenceSource", "NoEvidence", "unavailable"]


@dataclass(frozen=True)
class Evidence:
    """A model version's card and metrics as the policy sees them."""

    available: bool
    card_present: bool = False
    completeness: float = 0.0
    missing: tuple[str, ...] = ()
    risk: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def to_input(self) -> dict[str, Any]:
        """``input.evidence`` of the deploy policy."""
        return {
            "available": self.available,
            "model_card": {
                "present": self.card_present,
                "completeness": self.completeness,
                "missing": list(self.missing),
                "risk": self.risk,
            },
            "metrics": dict(self.metrics),
            "problems": list(self.problems),
        }


def unavailable(problem: str) -> Evidence:
    """Evidence that could not be read, saying why."""
    return Evidence(available=False, problems=(problem,))


class EvidenceSource(Protocol):
    """Finds the evidence of ``model`` version ``version`` (blocking; run in a worker thread)."""

    def evidence(self, model: str, version: str) -> Evidence: ...


class NoEvidence:
    """The source of a service that reads no model registry: nothing is ever available."""

    def evidence(self, model: str, version: str) -> Evidence:
        """Unavailable, saying so."""
        return unavailable("the governance service reads no model registry (MLflow is not enabled)")
