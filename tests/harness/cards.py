"""Model cards for the tests that need one: complete (every production field filled) or partial."""

from __future__ import annotations

from typing import Any

from hubforge.modelcard import completeness, empty_card


def complete_card(name: str, accuracy: float = 0.91) -> dict[str, Any]:
    """A card filling every field production requires (``completeness(...).score == 1``)."""
    card = empty_card(name)
    card["model_details"] |= {
        "overview": "Predicts churn within 30 days.",
        "owners": [{"name": "alice", "contact": "alice@example.com"}],
    }
    card["model_parameters"] = {"model_architecture": "Logistic regression (scikit-learn)"}
    card["quantitative_analysis"] = {"performance_metrics": [{"type": "accuracy", "value": accuracy}]}
    card["considerations"] = {
        "limitations": [{"description": "Not calibrated for new customers"}],
        "ethical_considerations": [{"name": "Age bias", "mitigation_strategy": "Monitored monthly"}],
    }
    card |= {
        "intended_use": "Ranking customers for retention offers.",
        "out_of_scope_use": "Credit decisions.",
        "training_data": {"datasets": [{"name": "churn-train", "split": "training"}]},
        "fairness": {"evaluations": [{"group": "age_band", "metric": "recall", "value": 0.8}]},
        "risk_rating": "medium",
    }
    assert completeness(card).score == 1.0, completeness(card).missing
    return card


def partial_card(name: str) -> dict[str, Any]:
    """A valid card that lacks the fairness evaluation and the risk rating."""
    card = complete_card(name)
    del card["fairness"], card["risk_rating"]
    return card
