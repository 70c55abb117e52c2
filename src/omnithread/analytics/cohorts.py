"""Cohorts, revenue net of refunds, and named RFM segments.

- **Cohorts**: persons by the month of their first order and the channel it came through; per month since,
  the share of the cohort that ordered again and the revenue it brought.
- **Revenue by month and channel**: orders' revenue, refunds (``Order Refunded``, in the month and channel
  of the refund) and the net.
- **RFM segments**: the profiles' recency and frequency scores (quintiles, 5 best) named by the usual grid
  (champions, loyal, potential loyalists, new, promising, need attention, about to sleep, at risk, cannot lose
  them, hibernating), with persons and revenue per segment.
"""

from __future__ import annotations

from omnithread.analytics import ORDER_VALUE_SQL
from omnithread.engine.base import Engine
from omnithread.profile import profile_columns

__all__ = ["cohorts", "revenue_by_month", "rfm_segments", "segment_sql", "segment_of", "RFM_SEGMENTS"]


# (name, recency scores, frequency scores): the usual 5 x 5 grid of RFM segments, every cell named once
RFM_SEGMENTS = [
    ("champions", (5,), (4, 5)),
    ("loyal", (3, 4), (4, 5)),
    ("cannot lose them", (1, 2), (5,)),
    ("at risk", (1, 2), (3, 4)),
    ("hibernating", (1, 2), (1, 2)),
    ("about to sleep", (3,), (1, 2)),
    ("need attention", (3,), (3,)),
    ("potential loyalists", (4, 5), (2, 3)),
    ("promising", (4,), (1,)),
    ("new", (5,), (1,)),
]


def segment_sql() -> str:
    """A CASE naming the RFM segment of a row with ``r_score`` and ``f_score`` (NULL without orders)."""
    cases = []
    for name, recency, frequency in RFM_SEGMENTS:
        r = ", ".join(str(v) for v in recency)
        f = ", ".join(str(v) for v in frequency)
        cases.append(f"WHEN r_score IN ({r}) AND f_score IN ({f}) THEN '{name}'")
    return "CASE " + " ".join(cases) + " END"


def cohorts(engine: Engine, months: int = 12) -> list[dict]:
    """Per cohort (month of first order, channel of that order) and month since: persons in the cohort,
    persons ordering that month, their share, and the revenue. Needs persons (``resolve``)."""
    return engine.rows(f"""
        WITH orders AS (
            SELECT person_id, channel, event_at, date_trunc('month', event_at) AS month, {ORDER_VALUE_SQL} AS value
            FROM event_persons WHERE event = 'Order Completed' AND person_id IS NOT NULL
        ), firsts AS (
            SELECT person_id, min(month) AS cohort, arg_min(channel, event_at) AS first_channel
            FROM orders GROUP BY 1
        ), sizes AS (SELECT cohort, first_channel, count(*) AS persons FROM firsts GROUP BY 1, 2),
        activity AS (
            SELECT f.cohort, f.first_channel,
                   CAST(12 * (year(o.month) - year(f.cohort)) + month(o.month) - month(f.cohort) AS INTEGER)
                       AS months_since,
                   count(DISTINCT o.person_id) AS active, sum(o.value) AS revenue
            FROM orders o JOIN firsts f ON f.person_id = o.person_id GROUP BY 1, 2, 3
        )
        SELECT CAST(a.cohort AS DATE) AS cohort, a.first_channel, s.persons, a.months_since, a.active,
               round(a.active / s.persons, 4) AS retention, round(a.revenue, 2) AS revenue
        FROM activity a JOIN sizes s ON s.cohort = a.cohort AND s.first_channel = a.first_channel
        WHERE a.months_since <= {int(months)}
        ORDER BY 1, 2, 4""")


def revenue_by_month(engine: Engine) -> list[dict]:
    """Per month and channel: orders, gross revenue, refunds and their value, and the net revenue."""
    return engine.rows(f"""
        WITH money AS (
            SELECT CAST(date_trunc('month', event_at) AS DATE) AS month, channel, event, {ORDER_VALUE_SQL} AS value
            FROM events WHERE event IN ('Order Completed', 'Order Refunded')
        )
        SELECT month, channel, count(*) FILTER (WHERE event = 'Order Completed') AS orders,
               round(coalesce(sum(value) FILTER (WHERE event = 'Order Completed'), 0), 2) AS gross_revenue,
               count(*) FILTER (WHERE event = 'Order Refunded') AS refunds,
               round(coalesce(sum(value) FILTER (WHERE event = 'Order Refunded'), 0), 2) AS refunded,
               round(coalesce(sum(value) FILTER (WHERE event = 'Order Completed'), 0)
                     - coalesce(sum(value) FILTER (WHERE event = 'Order Refunded'), 0), 2) AS net_revenue
        FROM money GROUP BY 1, 2 ORDER BY 1, 2""")


def rfm_segments(engine: Engine) -> list[dict]:
    """Persons with orders by named RFM segment: how many, their revenue, mean orders and days since the
    last order (and mean CLV when lifetime value was scored)."""
    if not engine.has_table("profiles"):
        return []
    columns = set(profile_columns(engine))
    clv = ", round(avg(clv), 2) AS mean_clv" if "clv" in columns else ""
    return engine.rows(f"""
        SELECT {segment_sql()} AS segment, count(*) AS persons, round(sum(revenue), 2) AS revenue,
               round(avg(orders), 2) AS mean_orders, round(avg(recency_days), 1) AS mean_days_since_order{clv}
        FROM profiles WHERE orders > 0 AND r_score IS NOT NULL
        GROUP BY 1 ORDER BY revenue DESC, segment""")


def segment_of(r_score: int | None, f_score: int | None) -> str | None:
    """The named segment of one pair of scores (None without orders)."""
    for name, recency, frequency in RFM_SEGMENTS:
        if r_score in recency and f_score in frequency:
            return name
    return None
