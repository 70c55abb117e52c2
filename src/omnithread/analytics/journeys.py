"""Cross-channel journeys: what online browsing does to store sales, and back, in money.

- **Webrooming**: a product viewed online (web or app) and bought in a store by the same person within
  ``days`` days after.
- **Showrooming**: a product picked up in a store (checkout-free shelves report it) and bought online (web,
  app or voice) by the same person within ``days`` days after.
- **Store revenue touched by online**: store orders whose buyer was active online in the ``days`` days
  before.

Each is counted twice: with identity resolution (events joined through the identity map into persons) and
without it (each event's own id, the account else the anonymous id, as a retailer without a connection sees
them). The difference is what connecting online and offline is worth, in orders and money.
"""

from __future__ import annotations

from omnithread.analytics import ORDER_VALUE_SQL
from omnithread.engine.base import Engine
from omnithread.errors import InvalidRequestError

__all__ = ["journeys"]

ONLINE_BROWSE = ("web", "app")
ONLINE_BUY = ("web", "app", "voice")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _lines(source: str, channels: tuple[str, ...]) -> str:
    return f"""
        SELECT person, message_id, event_at, line->>'product_id' AS product_id,
               coalesce(TRY_CAST(line->>'quantity' AS DOUBLE), 1) * coalesce(TRY_CAST(line->>'price' AS DOUBLE), 0)
                   AS value
        FROM (SELECT person, message_id, event_at, unnest(TRY_CAST(properties->'products' AS JSON[])) AS line
              FROM {source} WHERE event = 'Order Completed' AND channel IN {_in(channels)} AND person IS NOT NULL)"""


def _crossed(
    engine: Engine, source: str, window: str, first: str, first_channels: tuple[str, ...], bought_in: tuple[str, ...]
) -> dict:
    """Order lines bought in ``bought_in`` channels whose product the same person met by a ``first`` event in
    ``first_channels`` within the window before: orders, lines and their value."""
    return engine.rows(f"""
        WITH met AS (
            SELECT DISTINCT person, properties->>'product_id' AS product_id, event_at FROM {source}
            WHERE event = '{first}' AND channel IN {_in(first_channels)} AND person IS NOT NULL
        ), lines AS ({_lines(source, bought_in)}),
        matched AS (
            SELECT DISTINCT l.message_id, l.product_id, l.value FROM lines l JOIN met m
              ON m.person = l.person AND m.product_id = l.product_id
             AND m.event_at < l.event_at AND m.event_at >= l.event_at - {window}
        )
        SELECT count(DISTINCT message_id) AS orders, count(*) AS lines, round(coalesce(sum(value), 0), 2) AS revenue
        FROM matched""")[0]


def _counts(engine: Engine, source: str, days: int) -> dict:
    window = f"INTERVAL {int(days)} DAY"
    webrooming = _crossed(engine, source, window, "Product Viewed", ONLINE_BROWSE, ("store",))
    showrooming = _crossed(engine, source, window, "Product Picked", ("store",), ONLINE_BUY)
    touched = engine.rows(f"""
        WITH online AS (
            SELECT person, event_at FROM {source}
            WHERE channel IN {_in(ONLINE_BROWSE)} AND person IS NOT NULL
        ), orders AS (
            SELECT person, message_id, event_at, {ORDER_VALUE_SQL} AS value FROM {source}
            WHERE event = 'Order Completed' AND channel = 'store'
        ), flagged AS (
            SELECT o.message_id, o.value, max(CASE WHEN x.person IS NULL THEN 0 ELSE 1 END) = 1 AS touched
            FROM orders o LEFT JOIN online x
              ON x.person = o.person AND x.event_at < o.event_at AND x.event_at >= o.event_at - {window}
            GROUP BY o.message_id, o.value
        )
        SELECT count(*) AS store_orders, round(coalesce(sum(value), 0), 2) AS store_revenue,
               count(*) FILTER (WHERE touched) AS touched_orders,
               round(coalesce(sum(value) FILTER (WHERE touched), 0), 2) AS touched_revenue
        FROM flagged""")[0]
    touched["touched_share"] = (
        round(touched["touched_revenue"] / touched["store_revenue"], 4) if touched["store_revenue"] else None
    )
    return {"webrooming": webrooming, "showrooming": showrooming, "store_touched_by_online": touched}


def journeys(engine: Engine, days: int = 14) -> dict:
    """Webrooming, showrooming and store revenue touched by online within ``days``, with identity resolution
    and without, and what resolution added."""
    if not 1 <= days <= 365:
        raise InvalidRequestError("days", days, "a window of 1 to 365 days")
    without = _counts(engine, "(SELECT *, coalesce(user_id, anonymous_id) AS person FROM events)", days)
    if engine.has_table("profiles"):
        with_resolution = _counts(engine, "(SELECT *, person_id AS person FROM event_persons)", days)
    else:
        with_resolution = None
    added = None
    if with_resolution is not None:
        added = {
            "webrooming_revenue": round(with_resolution["webrooming"]["revenue"] - without["webrooming"]["revenue"], 2),
            "showrooming_revenue": round(
                with_resolution["showrooming"]["revenue"] - without["showrooming"]["revenue"], 2
            ),
            "store_revenue_touched_by_online": round(
                with_resolution["store_touched_by_online"]["touched_revenue"]
                - without["store_touched_by_online"]["touched_revenue"],
                2,
            ),
        }
    return {"days": days, "with_resolution": with_resolution, "without_resolution": without, "added": added}
