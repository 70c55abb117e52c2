"""Store analytics from the log: footfall, dwell, conversion, baskets and traffic by hour per store, and for
checkout-free stores what happens at the shelf (pick-to-buy conversion and put-back rates per product and
per shelf plate).

A visit is the anonymous id its events share (the sensing layer names it ``visit-<id>``); visitors are
persons, through the identity map when persons are resolved. Footfall needs door sensors: checkout-free
stores report ``Store Entered`` and ``Store Exited`` (with the dwell); a till store reports only its
receipts, so its footfall, dwell and conversion are unknown (None), never guessed. All of it is set-based
SQL on the engine, in DuckDB's dialect (portable to Spark).
"""

from __future__ import annotations

from omnithread.analytics import ORDER_VALUE_SQL
from omnithread.engine.base import Engine

__all__ = ["store_performance", "hourly_traffic", "shelf_performance"]

_ITEMS = (
    "coalesce((SELECT sum(coalesce(TRY_CAST(p->>'quantity' AS BIGINT), 1)) "
    "FROM (SELECT unnest(TRY_CAST(properties->'products' AS JSON[])) AS p)), 0)"
)


def _window(since: str | None, until: str | None) -> tuple[str, list]:
    where, params = [], []
    if since:
        where.append("event_at >= CAST(? AS TIMESTAMPTZ)")
        params.append(since)
    if until:
        where.append("event_at < CAST(? AS TIMESTAMPTZ)")
        params.append(until)
    return (" AND " + " AND ".join(where) if where else ""), params


def _persons_source(engine: Engine) -> str:
    """The log with each event's person (the identity map's) when persons are resolved, else its own id."""
    if engine.has_table("profiles"):
        return "event_persons"
    return "(SELECT *, coalesce(user_id, anonymous_id) AS person_id FROM events)"


def store_performance(engine: Engine, since: str | None = None, until: str | None = None) -> list[dict]:
    """One row per store: visits (door sensors), distinct visitors, mean and median dwell in minutes, orders,
    revenue, conversion (visits ending in an order), and basket size and value per order."""
    window, params = _window(since, until)
    return engine.rows(
        f"""
        WITH store_events AS (
            SELECT store_id, event, properties, event_at, coalesce(person_id, anonymous_id) AS visitor,
                   anonymous_id AS visit_id
            FROM {_persons_source(engine)} WHERE store_id IS NOT NULL AND channel = 'store'{window}
        ), visits AS (
            SELECT store_id, count(DISTINCT visit_id) AS visits, count(DISTINCT visitor) AS visitors
            FROM store_events WHERE event = 'Store Entered' GROUP BY store_id
        ), dwell AS (
            SELECT store_id, avg(TRY_CAST(properties->>'dwell_seconds' AS DOUBLE)) / 60 AS mean_dwell_minutes,
                   median(TRY_CAST(properties->>'dwell_seconds' AS DOUBLE)) / 60 AS median_dwell_minutes
            FROM store_events WHERE event = 'Store Exited' GROUP BY store_id
        ), orders AS (
            SELECT store_id, count(*) AS orders, sum({ORDER_VALUE_SQL}) AS revenue, avg({_ITEMS}) AS items_per_order,
                   count(DISTINCT visit_id) FILTER (WHERE visit_id IS NOT NULL) AS visits_with_order
            FROM store_events WHERE event = 'Order Completed' GROUP BY store_id
        )
        SELECT s.store_id, v.visits, v.visitors,
               round(d.mean_dwell_minutes, 2) AS mean_dwell_minutes,
               round(d.median_dwell_minutes, 2) AS median_dwell_minutes,
               coalesce(o.orders, 0) AS orders, round(coalesce(o.revenue, 0), 2) AS revenue,
               CASE WHEN v.visits > 0 THEN round(o.visits_with_order / v.visits, 4) END AS conversion,
               round(o.items_per_order, 2) AS items_per_order,
               CASE WHEN o.orders > 0 THEN round(o.revenue / o.orders, 2) END AS revenue_per_order,
               v.visits IS NOT NULL AS door_sensors
        FROM (SELECT DISTINCT store_id FROM store_events) s
        LEFT JOIN visits v ON v.store_id = s.store_id LEFT JOIN dwell d ON d.store_id = s.store_id
        LEFT JOIN orders o ON o.store_id = s.store_id
        ORDER BY s.store_id""",
        params,
    )


def hourly_traffic(engine: Engine, store_id: str | None = None, since: str | None = None) -> list[dict]:
    """Per store and hour of day (UTC): entries (door sensors) and orders, summed over the days observed."""
    window, params = _window(since, None)
    if store_id:
        window += " AND store_id = ?"
        params.append(store_id)
    return engine.rows(
        f"""
        SELECT store_id, CAST(hour(event_at) AS INTEGER) AS hour,
               count(*) FILTER (WHERE event = 'Store Entered') AS entries,
               count(*) FILTER (WHERE event = 'Order Completed') AS orders
        FROM events WHERE store_id IS NOT NULL AND channel = 'store'
          AND event IN ('Store Entered', 'Order Completed'){window}
        GROUP BY 1, 2 ORDER BY 1, 2""",
        params,
    )


def shelf_performance(engine: Engine, by: str = "product", store_id: str | None = None, limit: int = 50) -> list[dict]:
    """Checkout-free stores at the shelf, per product or per plate (``by``): picks, put-backs, the put-back
    rate (units returned per unit picked), and pick-to-buy conversion (visits that picked the product and
    left with it, per visit that picked it). Ordered by picks."""
    if by not in ("product", "plate"):
        from omnithread.errors import InvalidRequestError

        raise InvalidRequestError("by", by, "product or plate")
    key = "properties->>'product_id'" if by == "product" else "coalesce(properties->>'plate_id', 'unknown')"
    where, params = "", []
    if store_id:
        where, params = " AND store_id = ?", [store_id]
    return engine.rows(
        f"""
        WITH shelf AS (
            SELECT store_id, {key} AS key, properties->>'product_id' AS product_id, event,
                   anonymous_id AS visit_id,
                   coalesce(TRY_CAST(properties->>'quantity' AS BIGINT), 1) AS units
            FROM events
            WHERE event IN ('Product Picked', 'Product Returned To Shelf') AND store_id IS NOT NULL{where}
        ), bought AS (
            SELECT DISTINCT anonymous_id AS visit_id, line->>'product_id' AS product_id
            FROM (SELECT anonymous_id, unnest(TRY_CAST(properties->'products' AS JSON[])) AS line
                  FROM events WHERE event = 'Order Completed' AND channel = 'store'
                    AND anonymous_id IN (SELECT visit_id FROM shelf){where})
        ), visits AS (
            SELECT s.store_id, s.key, s.visit_id, s.product_id,
                   sum(units) FILTER (WHERE event = 'Product Picked') AS picked,
                   sum(units) FILTER (WHERE event = 'Product Returned To Shelf') AS returned
            FROM shelf s GROUP BY 1, 2, 3, 4
        )
        SELECT v.store_id, v.key AS {by}, CAST(coalesce(sum(picked), 0) AS BIGINT) AS units_picked,
               CAST(coalesce(sum(returned), 0) AS BIGINT) AS units_put_back,
               round(coalesce(sum(returned), 0) / nullif(sum(picked), 0), 4) AS put_back_rate,
               count(DISTINCT v.visit_id) FILTER (WHERE picked > 0) AS visits_picked,
               count(DISTINCT v.visit_id) FILTER (WHERE picked > 0 AND b.visit_id IS NOT NULL) AS visits_bought,
               round(count(DISTINCT v.visit_id) FILTER (WHERE picked > 0 AND b.visit_id IS NOT NULL)
                     / nullif(count(DISTINCT v.visit_id) FILTER (WHERE picked > 0), 0), 4) AS pick_to_buy
        FROM visits v LEFT JOIN bought b ON b.visit_id = v.visit_id AND b.product_id = v.product_id
        GROUP BY 1, 2 ORDER BY units_picked DESC, 1, 2 LIMIT {int(limit)}""",
        params + params,
    )
