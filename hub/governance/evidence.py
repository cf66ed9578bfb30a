"""What a deploy policy and an approver weigh about a model version: its card and its run's metrics.

:class:`Evidence` is the plain value the policy input carries (``input.evidence``), and the
card itself, which the decision page shows. An :class:`EvidenceSource` finds it, and which
version a registered model's alias names (what is in production); the service calls it from
a worker thread. Without a source (:class:`NoEvidence`) the evidence is unavailable and the
default policy refuses production: a policy never passes for want of looking.
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
    #: The card as saved, for people to read (the policy weighs the facts above, not it).
    card: Mapping[str, Any] | None = None

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
    """Reads a model registry (blocking; run in a worker thread)."""

    def evidence(self, model: str, version: str) -> Evidence:
        """The evidence of ``model`` version ``version``; unavailable, saying why, when it cannot be read."""
        ...

    def alias_version(self, model: str, alias: str) -> str | None:
        """The version ``model``'s ``alias`` names, None when it names none; a
        :class:`~hubforge.errors.HubforgeError` when the registry cannot say."""
        ...


class NoEvidence:
    """The source of a service that reads no model registry: nothing is ever available."""

    def evidence(self, model: str, version: str) -> Evidence:
        """Unavailable, saying so."""
        return unavailable("the governance service reads no model registry (MLflow is not enabled)")

    def alias_version(self, model: str, alias: str) -> str | None:
        """None: no alias is known without a registry."""
        return None
