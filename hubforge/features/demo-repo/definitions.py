"""hubforge's demo feature repository: the customers and merchants of a payments company.

Two models read from it: a churn model (who is about to leave) and a fraud model (which
card payment is suspicious). ``hubforge features apply`` (run by ``make up``) copies this
file into ``<data_dir>/features/``, generates the Parquet files under ``data/`` there, and
applies and materializes it; the project's name and its stores are in the
``feature_store.yaml`` written beside it. It is a plain Feast repository: ``feast -c
<data_dir>/features plan`` reads it too.
"""

from datetime import timedelta
from pathlib import Path

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Bool, Float32, Float64, Int64, String
from feast.value_type import ValueType

#: The generated Parquet files, beside this file wherever the repository was written.
DATA = Path(__file__).resolve().parent / "data"

GROWTH = "growth-analytics@example.org"
RISK = "risk-engineering@example.org"

# -- entities -----------------------------------------------------------------------------------

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A person holding a subscription and a payment card with us.",
    owner=GROWTH,
    tags={"domain": "customers", "pii": "pseudonymous"},
)

merchant = Entity(
    name="merchant",
    join_keys=["merchant_id"],
    value_type=ValueType.INT64,
    description="A shop that accepts our customers' card payments.",
    owner=RISK,
    tags={"domain": "payments", "pii": "none"},
)

# -- batch sources (Parquet, the warm tier) -------------------------------------------------------

customer_profile_source = FileSource(
    name="customer_profile_source",
    path=str(DATA / "customer_profile.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Monthly snapshot of each customer's plan and account, from the billing system.",
    owner=GROWTH,
    tags={"system": "billing", "refresh": "monthly", "tier": "warm"},
)

customer_activity_source = FileSource(
    name="customer_activity_source",
    path=str(DATA / "customer_activity.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Daily roll-up of each customer's app sessions, support tickets and card payments.",
    owner=GROWTH,
    tags={"system": "events", "refresh": "daily", "tier": "warm"},
)

merchant_risk_source = FileSource(
    name="merchant_risk_source",
    path=str(DATA / "merchant_risk.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Daily risk statistics of each merchant, from the payments ledger and chargebacks.",
    owner=RISK,
    tags={"system": "ledger", "refresh": "daily", "tier": "warm"},
)

transaction_request = RequestSource(
    name="transaction_request",
    schema=[
        Field(name="amount_usd", dtype=Float64, description="The payment's amount, in US dollars."),
    ],
    description="The card payment being scored, sent with the online request.",
    owner=RISK,
    tags={"system": "checkout"},
)

# -- feature views --------------------------------------------------------------------------------

customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(days=90),
    schema=[
        Field(
            name="plan",
            dtype=String,
            description="Subscription plan: basic, plus or premium.",
            tags={"kind": "category"},
        ),
        Field(name="tenure_months", dtype=Int64, description="Months since the customer signed up."),
        Field(name="monthly_charges_usd", dtype=Float32, description="What the plan costs per month, in US dollars."),
        Field(name="age", dtype=Int64, description="The customer's age in years.", tags={"pii": "quasi-identifier"}),
        Field(
            name="region",
            dtype=String,
            description="Sales region: north, south, east or west.",
            tags={"kind": "category"},
        ),
    ],
    source=customer_profile_source,
    online=True,
    description="Who the customer is and what they pay: slow-moving account facts.",
    owner=GROWTH,
    tags={"team": "growth", "use": "churn", "sensitivity": "confidential"},
)

customer_activity = FeatureView(
    name="customer_activity",
    entities=[customer],
    ttl=timedelta(days=30),
    schema=[
        Field(name="sessions_7d", dtype=Int64, description="App sessions in the last 7 days."),
        Field(name="avg_session_minutes_7d", dtype=Float32, description="Mean session length over the last 7 days."),
        Field(name="support_tickets_30d", dtype=Int64, description="Support tickets opened in the last 30 days."),
        Field(name="days_since_last_login", dtype=Int64, description="Whole days since the last login."),
        Field(name="transactions_7d", dtype=Int64, description="Card payments in the last 7 days."),
        Field(name="spend_7d_usd", dtype=Float64, description="Card spend over the last 7 days, in US dollars."),
    ],
    source=customer_activity_source,
    online=True,
    description="How the customer uses the product and their card, day by day.",
    owner=GROWTH,
    tags={"team": "growth", "use": "churn,fraud", "sensitivity": "internal"},
)

merchant_risk = FeatureView(
    name="merchant_risk",
    entities=[merchant],
    ttl=timedelta(days=30),
    schema=[
        Field(name="category", dtype=String, description="Merchant category: grocery, travel, electronics ..."),
        Field(name="txn_count_30d", dtype=Int64, description="Payments taken over the last 30 days."),
        Field(name="avg_ticket_usd", dtype=Float64, description="Mean payment over the last 30 days, in US dollars."),
        Field(name="chargeback_rate_90d", dtype=Float64, description="Share of payments charged back over 90 days."),
    ],
    source=merchant_risk_source,
    online=True,
    description="How risky a merchant has been lately: volume, ticket size and chargebacks.",
    owner=RISK,
    tags={"team": "risk", "use": "fraud", "sensitivity": "internal"},
)


# Feast 0.67 compares an on-demand view's declared fields with those it infers from a run
# of the function, descriptions included, and infers none: its fields carry no description
# of their own, the view's description says what each one is.
@on_demand_feature_view(
    sources=[merchant_risk[["avg_ticket_usd"]], customer_activity[["spend_7d_usd"]], transaction_request],
    schema=[
        Field(name="amount_vs_merchant_avg", dtype=Float64),
        Field(name="amount_vs_customer_daily_spend", dtype=Float64),
        Field(name="large_for_merchant", dtype=Bool),
    ],
    description=(
        "How unusual a payment is, computed at request time: amount_vs_merchant_avg (the amount over the "
        "merchant's mean ticket), amount_vs_customer_daily_spend (over the customer's daily card spend) and "
        "large_for_merchant (over 3x the merchant's mean ticket)."
    ),
    owner=RISK,
    tags={"team": "risk", "use": "fraud", "sensitivity": "internal"},
)
def transaction_risk(inputs: pd.DataFrame) -> pd.DataFrame:
    amount = inputs["amount_usd"].astype("float64")
    daily_spend = (inputs["spend_7d_usd"].astype("float64") / 7.0).clip(lower=1.0)
    out = pd.DataFrame()
    out["amount_vs_merchant_avg"] = amount / inputs["avg_ticket_usd"].astype("float64").clip(lower=1.0)
    out["amount_vs_customer_daily_spend"] = amount / daily_spend
    out["large_for_merchant"] = out["amount_vs_merchant_avg"] > 3.0
    return out


# -- feature services: what each model reads -----------------------------------------------------

churn_model_v1 = FeatureService(
    name="churn_model_v1",
    features=[customer_profile, customer_activity],
    description="The churn model's inputs: account facts and recent activity.",
    owner=GROWTH,
    tags={"model": "churn", "stage": "production"},
)

fraud_model_v1 = FeatureService(
    name="fraud_model_v1",
    features=[
        customer_activity[["transactions_7d", "spend_7d_usd", "days_since_last_login"]],
        merchant_risk,
        transaction_risk,
    ],
    description="The fraud model's inputs: the customer's recent card use, the merchant's risk, the payment itself.",
    owner=RISK,
    tags={"model": "fraud", "stage": "staging"},
)
