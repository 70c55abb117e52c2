"""The understand stage: lifetime value, store and cross-channel analytics, cohorts, RFM, and the report."""

# the views the CLI and the API serve by name (flows.analytics_view)
ANALYTICS_VIEWS = (
    "stores", "hourly", "shelves", "plates", "journeys", "revenue", "cohorts", "rfm", "lifetime",
    "rules_by_store", "rules_by_channel",
)  # fmt: skip

# an order's value, as every analytic reads it: its total, else its revenue (the Segment spec's two names)
ORDER_VALUE_SQL = "coalesce(TRY_CAST(properties->>'total' AS DOUBLE), TRY_CAST(properties->>'revenue' AS DOUBLE), 0)"
