"""The demo repository's data: seeded, so the same anchor always gives the same rows.

Every row's time is before ``anchor`` (``apply`` takes the hour it runs in), so that
materializing up to now finds the latest row of every customer and merchant, and a
historical retrieval at the anchor finds each view's rows within its TTL. Nothing here
touches the disk or Feast: :func:`generate` returns plain data frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from .repo import DATA_VERSION, FILES

__all__ = ["DATA_VERSION", "FILES", "Shape", "generate"]

PLANS = {"basic": 19.0, "plus": 39.0, "premium": 79.0}
REGIONS = ("north", "south", "east", "west")
CATEGORIES = ("grocery", "fuel", "travel", "electronics", "fashion", "gaming")


@dataclass(frozen=True)
class Shape:
    """How much data: customers, merchants, days of daily roll-ups, payments; and the seed."""

    customers: int = 500
    merchants: int = 100
    days: int = 7
    transactions: int = 2000
    seed: int = 20240613


def _stamps(anchor: datetime, days_back: np.ndarray) -> pd.Series:
    """Daily roll-ups, each an hour before the anchor's time of day, ``days_back`` days back."""
    base = pd.Timestamp(anchor).tz_convert("UTC") - pd.Timedelta(hours=1)
    return pd.Series(base - pd.to_timedelta(days_back, unit="D"))


def _customer_profile(rng: np.random.Generator, anchor: datetime, shape: Shape) -> pd.DataFrame:
    """Three monthly snapshots per customer; the plan may change between them."""
    ids = np.arange(1001, 1001 + shape.customers, dtype="int64")
    months_back = np.array([60, 30, 0])
    signed_up = rng.integers(1, 72, size=shape.customers)
    age = rng.integers(18, 80, size=shape.customers)
    region = rng.choice(REGIONS, size=shape.customers)
    rows = []
    for back in months_back:
        plan = rng.choice(list(PLANS), size=shape.customers, p=[0.5, 0.3, 0.2])
        rows.append(
            pd.DataFrame(
                {
                    "customer_id": ids,
                    "event_timestamp": _stamps(anchor, np.full(shape.customers, back)),
                    "plan": plan,
                    "tenure_months": np.maximum(signed_up - back // 30, 0).astype("int64"),
                    "monthly_charges_usd": np.array([PLANS[p] for p in plan], dtype="float32"),
                    "age": age.astype("int64"),
                    "region": region,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _customer_activity(rng: np.random.Generator, anchor: datetime, shape: Shape) -> pd.DataFrame:
    """One roll-up per customer per day; engaged customers log in often and spend more."""
    engagement = rng.beta(2.0, 2.0, size=shape.customers)
    ids = np.repeat(np.arange(1001, 1001 + shape.customers, dtype="int64"), shape.days)
    level = np.repeat(engagement, shape.days)
    back = np.tile(np.arange(shape.days), shape.customers)
    n = len(ids)
    return pd.DataFrame(
        {
            "customer_id": ids,
            "event_timestamp": _stamps(anchor, back),
            "sessions_7d": rng.poisson(1 + 20 * level).astype("int64"),
            "avg_session_minutes_7d": (2 + 25 * level * rng.random(n)).astype("float32"),
            "support_tickets_30d": rng.poisson(2.5 * (1 - level)).astype("int64"),
            "days_since_last_login": rng.geometric(np.clip(level, 0.05, 0.95)).astype("int64") - 1,
            "transactions_7d": rng.poisson(3 + 15 * level).astype("int64"),
            "spend_7d_usd": np.round(rng.gamma(2.0, 40 + 200 * level), 2),
        }
    )


def _merchant_risk(rng: np.random.Generator, anchor: datetime, shape: Shape) -> pd.DataFrame:
    """One roll-up per merchant per day; a few merchants run a high chargeback rate."""
    category = rng.choice(CATEGORIES, size=shape.merchants)
    ticket = rng.lognormal(3.5, 0.7, size=shape.merchants)
    risky = rng.random(shape.merchants) < 0.1
    ids = np.repeat(np.arange(501, 501 + shape.merchants, dtype="int64"), shape.days)
    back = np.tile(np.arange(shape.days), shape.merchants)
    n = len(ids)
    base_rate = np.repeat(np.where(risky, 0.04, 0.004), shape.days)
    return pd.DataFrame(
        {
            "merchant_id": ids,
            "event_timestamp": _stamps(anchor, back),
            "category": np.repeat(category, shape.days),
            "txn_count_30d": rng.poisson(900, size=n).astype("int64"),
            "avg_ticket_usd": np.round(np.repeat(ticket, shape.days) * rng.uniform(0.9, 1.1, size=n), 2),
            "chargeback_rate_90d": np.round(base_rate * rng.uniform(0.5, 1.5, size=n), 5),
        }
    )


def _churn_labels(rng: np.random.Generator, anchor: datetime, activity: pd.DataFrame) -> pd.DataFrame:
    """Whether each customer left in the week after the anchor's day: the churn model's training rows."""
    latest = activity[activity["event_timestamp"] == activity["event_timestamp"].max()]
    risk = (
        -2.0
        + 0.25 * latest["days_since_last_login"].to_numpy()
        + 0.4 * latest["support_tickets_30d"].to_numpy()
        - 0.08 * latest["sessions_7d"].to_numpy()
    )
    churned = rng.random(len(latest)) < 1.0 / (1.0 + np.exp(-risk))
    hours_back = rng.integers(1, 25, size=len(latest))
    return pd.DataFrame(
        {
            "customer_id": latest["customer_id"].to_numpy(),
            "event_timestamp": pd.Timestamp(anchor).tz_convert("UTC") - pd.to_timedelta(hours_back, unit="h"),
            "churned": churned,
        }
    )


def _transactions(rng: np.random.Generator, anchor: datetime, shape: Shape, merchants: pd.DataFrame) -> pd.DataFrame:
    """Card payments over the last days, labelled: the fraud model's training rows."""
    customer = rng.integers(1001, 1001 + shape.customers, size=shape.transactions).astype("int64")
    merchant = rng.integers(501, 501 + shape.merchants, size=shape.transactions).astype("int64")
    ticket = merchants.groupby("merchant_id")["avg_ticket_usd"].mean().reindex(merchant).to_numpy()
    amount = np.round(ticket * rng.lognormal(0.0, 0.8, size=shape.transactions), 2)
    # Within the days of roll-ups, so each payment finds its customer's and merchant's features.
    seconds_back = rng.integers(3600, (shape.days - 1) * 86400, size=shape.transactions)
    odds = -5.0 + 1.2 * np.log(amount / ticket + 1e-9) + 2.5 * (amount > 3 * ticket)
    return pd.DataFrame(
        {
            "customer_id": customer,
            "merchant_id": merchant,
            "event_timestamp": pd.Timestamp(anchor).tz_convert("UTC") - pd.to_timedelta(seconds_back, unit="s"),
            "amount_usd": amount,
            "is_fraud": rng.random(shape.transactions) < 1.0 / (1.0 + np.exp(-odds)),
        }
    )


def generate(anchor: datetime, shape: Shape = Shape()) -> dict[str, pd.DataFrame]:
    """The demo's frames (see :data:`FILES`), all rows before ``anchor`` (a UTC-aware time)."""
    if anchor.tzinfo is None or anchor.utcoffset() != timedelta(0):
        raise ValueError("the anchor must be a UTC-aware time")
    rng = np.random.default_rng(shape.seed)
    frames = {
        "customer_profile": _customer_profile(rng, anchor, shape),
        "customer_activity": _customer_activity(rng, anchor, shape),
        "merchant_risk": _merchant_risk(rng, anchor, shape),
    }
    frames["churn_labels"] = _churn_labels(rng, anchor, frames["customer_activity"])
    frames["transactions"] = _transactions(rng, anchor, shape, frames["merchant_risk"])
    for name in ("customer_profile", "customer_activity", "merchant_risk"):
        # Feast's created_timestamp_column breaks ties between rows of the same time.
        frames[name]["created"] = frames[name]["event_timestamp"]
    return frames
