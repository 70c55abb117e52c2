"""The unified profile: one row per person, built set-based from the log through the identity map.

Each event belongs to the person of its account when it names one, otherwise to
the person of its device or store session. Categories come from the log itself:
online events carry a product's category, which then also names the category of
the same product bought at a till.
"""

from __future__ import annotations

import logging

from omnithread.engine.base import Engine
from omnithread.engine.tables import count_ok_sql, money_ok_sql, number_sql
from omnithread.events.schema import CONSENT_PURPOSES
from omnithread.identity.graph import EVENT_PERSONS_SQL

__all__ = ["build_profiles", "get_profile", "skipped_rows"]

_log = logging.getLogger(__name__)


def _consent_columns() -> str:
    # Consent Updated events and context.consent (Segment's categoryPreferences) both count; the latest wins.
    parts = []
    for purpose in CONSENT_PURPOSES:
        value = (
            f"coalesce(TRY_CAST(properties->'purposes'->>'{purpose}' AS BOOLEAN), "
            f"TRY_CAST(consent->'categoryPreferences'->>'{purpose}' AS BOOLEAN))"
        )
        parts.append(f"arg_max({value}, event_at) FILTER (WHERE {value} IS NOT NULL) AS consent_{purpose}")
    return ",\n           ".join(parts)


_LINE_OK = f"{count_ok_sql('quantity')} AND {money_ok_sql('price')}"


def _report_skipped(engine: Engine) -> None:
    """Keep the order lines this build left out in ``skipped_rows`` (stage ``profiles``), each with
    its event, field, value and reason, and log how many."""
    engine.execute("""CREATE TABLE IF NOT EXISTS skipped_rows (
        stage VARCHAR, message_id VARCHAR, field VARCHAR, value VARCHAR, reason VARCHAR, skipped_at TIMESTAMPTZ)""")
    engine.execute("DELETE FROM skipped_rows WHERE stage = 'profiles'")
    engine.execute(f"""
        INSERT INTO skipped_rows
        SELECT 'profiles', message_id,
               CASE WHEN NOT {count_ok_sql("quantity")} THEN 'products[].quantity' ELSE 'products[].price' END,
               left(CASE WHEN NOT {count_ok_sql("quantity")} THEN quantity_text ELSE price_text END, 40),
               'outside the range the schema allows', now()
        FROM order_line_values WHERE NOT ({_LINE_OK})""")
    skipped = engine.scalar("SELECT count(*) FROM skipped_rows WHERE stage = 'profiles'")
    if skipped:
        _log.warning(
            "profiles: %d order line(s) left out, their numbers outside the schema's ranges (listed in skipped_rows)",
            skipped,
        )


def skipped_rows(engine: Engine, stage: str | None = None) -> list[dict]:
    """Rows a stage left out at its last run, with the field, the value and the reason."""
    if not engine.has_table("skipped_rows"):
        return []
    where, params = ("WHERE stage = ?", [stage]) if stage else ("", [])
    return engine.rows(f"SELECT * FROM skipped_rows {where} ORDER BY stage, message_id", params)


def build_profiles(engine: Engine) -> int:
    """Rebuild ``profiles`` (and the ``event_persons`` view) from the log and the identity map."""
    engine.execute(f"CREATE OR REPLACE VIEW event_persons AS {EVENT_PERSONS_SQL}")
    engine.execute("""
        CREATE OR REPLACE TEMP TABLE product_categories AS
        SELECT product_id, mode(category) AS category FROM (
            SELECT properties->>'product_id' AS product_id, properties->>'category' AS category FROM events
            WHERE properties->>'category' IS NOT NULL AND properties->>'product_id' IS NOT NULL)
        GROUP BY product_id""")
    engine.execute(f"""
        CREATE OR REPLACE TEMP TABLE order_line_values AS
        SELECT ep.person_id, ep.channel, ep.store_id, ep.message_id, ep.event_at,
               line->>'product_id' AS product_id, line->>'quantity' AS quantity_text, line->>'price' AS price_text,
               {number_sql("line->>'quantity'", 1)} AS quantity, {number_sql("line->>'price'", 0)} AS price
        FROM (SELECT *, unnest(TRY_CAST(properties->'products' AS JSON[])) AS line
              FROM event_persons WHERE event = 'Order Completed' AND person_id IS NOT NULL) ep""")
    # A line whose numbers lie outside the schema's ranges (stored before the door checked them, or
    # by another writer) is left out and reported, never the end of the build.
    engine.execute(f"""
        CREATE OR REPLACE TEMP TABLE order_lines AS
        SELECT person_id, channel, store_id, message_id, event_at, product_id,
               CAST(quantity AS BIGINT) AS quantity, price
        FROM order_line_values WHERE {_LINE_OK}""")
    _report_skipped(engine)
    engine.execute(f"""
        CREATE OR REPLACE TABLE profiles AS
        WITH activity AS (
            SELECT person_id, list_sort(list_distinct(list(channel))) AS channels,
                   min(event_at) AS first_seen_at, max(event_at) AS last_seen_at,
                   arg_max(traits->>'plan', event_at) FILTER (WHERE traits->>'plan' IS NOT NULL) AS membership,
                   {_consent_columns()}
            FROM event_persons WHERE person_id IS NOT NULL GROUP BY person_id
        ), orders AS (
            SELECT person_id, count(DISTINCT message_id) AS orders, CAST(sum(quantity) AS BIGINT) AS items,
                   round(sum(quantity * price), 2) AS revenue, max(event_at) AS last_order_at
            FROM order_lines GROUP BY person_id
        ), by_channel AS (
            SELECT person_id, map_from_entries(list((channel, {{'orders': orders, 'items': items,
                   'revenue': revenue}}) ORDER BY channel)) AS by_channel
            FROM (SELECT person_id, channel, count(DISTINCT message_id) AS orders,
                         CAST(sum(quantity) AS BIGINT) AS items,
                         round(sum(quantity * price), 2) AS revenue FROM order_lines GROUP BY 1, 2)
            GROUP BY person_id
        ), by_store AS (
            SELECT person_id, map_from_entries(list((store_id, revenue) ORDER BY store_id)) AS revenue_by_store
            FROM (SELECT person_id, store_id, round(sum(quantity * price), 2) AS revenue FROM order_lines
                  WHERE store_id IS NOT NULL GROUP BY 1, 2)
            GROUP BY person_id
        ), categories AS (
            SELECT person_id, list(category ORDER BY weight DESC, category)[:3] AS favourite_categories
            FROM (SELECT ol.person_id, pc.category, sum(ol.quantity) AS weight
                  FROM order_lines ol JOIN product_categories pc USING (product_id) GROUP BY 1, 2)
            GROUP BY person_id
        ), as_of AS (SELECT max(event_at) AS as_of_at FROM events)
        SELECT p.person_id, p.identifiers, p.account, p.email, p.phone, p.loyalty_card, p.payment_token,
               p.device, p.store_session, a.channels, a.first_seen_at, a.last_seen_at, a.membership,
               {", ".join(f"a.consent_{x}" for x in CONSENT_PURPOSES)},
               coalesce(o.orders, 0) AS orders, coalesce(o.items, 0) AS items, coalesce(o.revenue, 0) AS revenue,
               c.by_channel, s.revenue_by_store, g.favourite_categories,
               date_diff('day', o.last_order_at, (SELECT as_of_at FROM as_of)) AS recency_days,
               CASE WHEN o.orders IS NULL THEN NULL ELSE 6 - ntile(5) OVER (
                   PARTITION BY o.orders IS NULL ORDER BY o.last_order_at DESC) END AS r_score,
               CASE WHEN o.orders IS NULL THEN NULL ELSE ntile(5) OVER (
                   PARTITION BY o.orders IS NULL ORDER BY o.orders, p.person_id) END AS f_score,
               CASE WHEN o.orders IS NULL THEN NULL ELSE ntile(5) OVER (
                   PARTITION BY o.orders IS NULL ORDER BY o.revenue, p.person_id) END AS m_score
        FROM persons p
        LEFT JOIN activity a USING (person_id) LEFT JOIN orders o USING (person_id)
        LEFT JOIN by_channel c USING (person_id) LEFT JOIN by_store s USING (person_id)
        LEFT JOIN categories g USING (person_id)""")
    return engine.scalar("SELECT count(*) FROM profiles")


def profile_columns(engine: Engine) -> list[str]:
    """The columns ``profiles`` has now (later stages add theirs: lifetime value, consent purposes)."""
    return engine.query("SELECT * FROM profiles LIMIT 0").column_names


def get_profile(engine: Engine, person_id: str) -> dict | None:
    """One person's profile row, or None when profiles have not been built or the person has none."""
    if not engine.has_table("profiles"):
        return None
    rows = engine.rows("SELECT * FROM profiles WHERE person_id = ?", [person_id])
    if not rows:
        return None
    profile = rows[0]
    for key in ("by_channel", "revenue_by_store"):  # DuckDB maps arrive as lists of pairs
        if isinstance(profile.get(key), list):
            profile[key] = dict(profile[key])
    return profile
