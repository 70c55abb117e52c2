"""The dashboard: server-rendered pages over the same data, behind a read key.

Pages: an overview (events by channel and day, rejected events by reason, persons and how they were
connected), a person page (one timeline across web, app, stores and voice; identities;
recommendations), a store page (visits, receipts, picks put back by shelf) and a recommendation
explorer. Charts are SVG drawn on the server with matplotlib; the pages fetch nothing from the
network.
"""

from __future__ import annotations

import html
from urllib.parse import quote

from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

from omnithread.analytics.report import STYLE, gather, html_table, sections, svg_chart
from omnithread.destinations.webhooks import destination_metrics
from omnithread.errors import NotFoundError, OmnithreadError
from omnithread.identity import connection_summary
from omnithread.identity.graph import EVENT_PERSONS_SQL
from omnithread.identity.lookup import find_person
from omnithread.recommend.service import SURFACES

__all__ = ["mount"]

_STYLE = STYLE


def _page(title: str, body: str) -> HTMLResponse:
    nav = (
        '<a href="/dashboard">Overview</a><a href="/dashboard/person">Person</a>'
        '<a href="/dashboard/stores">Stores</a><a href="/dashboard/recommend">Recommendations</a>'
        '<a href="/dashboard/analytics">Analytics</a>'
    )
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)} · omnithread"
        f"</title><style>{_STYLE}</style></head><body><header><b>omnithread</b> &nbsp; {nav}</header>"
        f"<main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )


def _table(rows: list[dict], columns: list[str] | None = None, cls: str = "") -> str:
    return html_table(rows, columns, cls, small=2)


_svg = svg_chart


def mount(app: FastAPI, service, authorised) -> None:
    read = Depends(authorised("read"))

    @app.get("/dashboard", response_class=HTMLResponse, tags=["dashboard"], summary="Overview")
    def overview(who=read):

        with service.reading():
            engine = service.reader.engine
            total = service.reader.log.count()
            persons = engine.scalar("SELECT count(*) FROM persons") if engine.has_table("persons") else 0
            by_day = engine.rows(
                "SELECT CAST(event_at AS DATE) AS day, coalesce(channel, '?') AS channel, "
                "count(*) AS events FROM events GROUP BY 1, 2 ORDER BY 1, 2"
            )
            by_channel = engine.rows(
                "SELECT coalesce(channel, '?') AS channel, count(*) AS events FROM events GROUP BY 1 ORDER BY 2 DESC"
            )
            rejected = service.reader.log.rejected_summary()
            open_rejected = engine.scalar("SELECT count(*) FROM rejected_events WHERE status = 'open'")
            stores = engine.rows(
                "SELECT store_id, count(*) AS events FROM events WHERE store_id IS NOT NULL GROUP BY 1 ORDER BY 1"
            )
            connection = connection_summary(engine) if persons else {}
        jobs = [
            {
                "job": j.job_id,
                "kind": j.kind,
                "origin": j.origin,
                "state": j.state,
                "created": j.created_at[:19].replace("T", " "),
                "seconds": j.seconds,
                "exit": j.exit_code,
            }
            for j in service.jobs.list(limit=20)
        ]
        service.keys.audit(who, "dashboard overview", None, "ok")

        def draw(ax):
            for channel in sorted({r["channel"] for r in by_day}):
                rows = [r for r in by_day if r["channel"] == channel]
                ax.plot([r["day"] for r in rows], [r["events"] for r in rows], label=channel)
            ax.set_ylabel("events a day")
            ax.legend(loc="upper left", fontsize=8)

        tiles = (
            f"<div class='tiles'><div class='tile'>events<b id='total-events'>{total:,}</b></div>"
            f"<div class='tile'>persons<b id='total-persons'>{persons:,}</b></div>"
            f"<div class='tile'>rejected, open<b id='total-rejected'>{open_rejected:,}</b></div></div>"
        )
        conn = ""
        if connection:
            c = {k: (v or 0) for k, v in connection.items()}
            conn = (
                f"<p>{c.get('online_identities', 0):,} online and {c.get('store_identities', 0):,}"
                f" store identities became {c.get('persons', 0):,} persons; "
                f"{c.get('store_revenue_known_online_customer_share', 0):.1%} of store revenue is "
                "attached to a known online customer.</p>"
            )
        store_links = "".join(
            f"<li><a href='/dashboard/store/{quote(s['store_id'])}'>{html.escape(s['store_id'])}"
            f"</a> ({s['events']:,} events)</li>"
            for s in stores
        )
        body = (
            tiles
            + "<h2>Events by channel and day</h2>"
            + (_svg(draw) if by_day else "<p>no events</p>")
            + _table(by_channel)
            + "<h2>Rejected events by reason</h2>"
            + _table(rejected)
            + "<h2>Persons and how they were connected</h2>"
            + conn
            + "<h2>Stores</h2><ul>"
            + store_links
            + "</ul>"
            + "<h2>Jobs</h2>"
            + (_table(jobs) if jobs else "<p>no jobs yet</p>")
            + _search_form()
        )
        return _page("Overview", body)

    @app.get("/dashboard/person", response_class=HTMLResponse, tags=["dashboard"], summary="A person")
    def person(q: str = "", who=read):

        if not q:
            return _page("Person", _search_form())
        with service.reading():
            engine = service.reader.engine
            try:
                person_id = find_person(engine, q, service.reader.pseudonymiser)
            except (NotFoundError, OmnithreadError):
                service.keys.audit(who, "dashboard person", None, "not found")
                return _page("Person", f"<p id='not-found'>No person found for {html.escape(q)}.</p>" + _search_form())
            identities = engine.rows(
                "SELECT identifier_type AS type, split_part(identifier, ':', 2) AS value, events "
                "FROM identity_map WHERE person_id = ? ORDER BY 1, 2",
                [person_id],
            )
            timeline = engine.rows(
                f"""
                SELECT event_at AS "when", channel, store_id AS store, coalesce(event, call) AS what,
                       coalesce(properties->>'product_id', properties->>'order_id') AS detail
                FROM ({EVENT_PERSONS_SQL}) WHERE person_id = ? ORDER BY event_at DESC LIMIT 200""",
                [person_id],
            )
            try:
                recs = service.recommendations().recommend(person_id, "for_you", n=10)
                rec_html = (
                    f"<p class='muted'>{html.escape(recs.fallback_reason)}</p>" if recs.fallback_reason else ""
                ) + _table(recs.items, ["product_id"])
            except OmnithreadError as exc:
                rec_html = f"<p class='muted'>{html.escape(str(exc))}</p>"
        service.keys.audit(who, "dashboard person", service.fingerprint(person_id), "ok")
        for row in identities:
            row["value"] = row["value"][:14] + "…" if len(row["value"]) > 15 else row["value"]
        body = (
            _search_form(q)
            + f"<p>Person <code id='person-id'>{html.escape(person_id)}</code></p>"
            + "<h2>Identities</h2>"
            + _table(identities)
            + "<h2>Recommended for them</h2>"
            + rec_html
            + "<h2>Timeline (newest first, every channel)</h2>"
            + _table(timeline)
        )
        return _page("Person", body)

    @app.get("/dashboard/stores", response_class=HTMLResponse, tags=["dashboard"], summary="Stores")
    def stores(who=read):
        with service.read_lock:
            rows = service.reader.engine.rows(
                "SELECT store_id, count(*) FILTER (WHERE event = 'Order Completed') AS "
                "receipts, count(*) FILTER (WHERE event = 'Store Entered') AS visits "
                "FROM events WHERE store_id IS NOT NULL GROUP BY 1 ORDER BY 1"
            )
        links = "".join(
            f"<li><a href='/dashboard/store/{quote(r['store_id'])}'>{html.escape(r['store_id'])}</a> "
            f"({r['receipts']:,} receipts, {r['visits']:,} gate visits)</li>"
            for r in rows
        )
        return _page("Stores", f"<ul>{links}</ul>")

    @app.get("/dashboard/store/{store_id}", response_class=HTMLResponse, tags=["dashboard"], summary="A store")
    def store(store_id: str, who=read):
        with service.read_lock:
            engine = service.reader.engine
            visits = engine.scalar(
                "SELECT count(*) FROM events WHERE store_id = ? AND event = 'Store Entered'", [store_id]
            )
            receipts = engine.rows(
                """
                SELECT event_at AS "when", properties->>'order_id' AS receipt,
                       TRY_CAST(properties->>'total' AS DOUBLE) AS total,
                       coalesce(properties->>'review_required', '') AS review
                FROM events WHERE store_id = ? AND event = 'Order Completed' ORDER BY event_at DESC LIMIT 50""",
                [store_id],
            )
            count = engine.scalar(
                "SELECT count(*) FROM events WHERE store_id = ? AND event = 'Order Completed'", [store_id]
            )
            put_back = engine.rows(
                """
                SELECT coalesce(regexp_extract(properties->>'plate_id', '^(G\\d+-S\\d+)', 1), '(till store)') AS shelf,
                       count(*) AS put_back FROM events
                WHERE store_id = ? AND event = 'Product Returned To Shelf' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20""",
                [store_id],
            )
        service.keys.audit(who, "dashboard store", store_id, "ok")
        if not count and not visits:
            return _page(f"Store {store_id}", "<p id='not-found'>No events for this store.</p>")

        def draw(ax):
            ax.barh([r["shelf"] for r in put_back][::-1], [r["put_back"] for r in put_back][::-1], color="#e76f51")
            ax.set_xlabel("picks put back")

        body = (
            f"<div class='tiles'><div class='tile'>gate visits<b id='visits'>{visits:,}</b></div>"
            f"<div class='tile'>receipts<b id='receipts'>{count:,}</b></div></div>"
            + "<h2>Picks put back, by shelf</h2>"
            + (_svg(draw) if put_back else "<p class='muted'>none</p>")
            + _table(put_back)
            + "<h2>Latest receipts</h2>"
            + _table(receipts)
        )
        return _page(f"Store {store_id}", body)

    @app.get("/dashboard/analytics", response_class=HTMLResponse, tags=["dashboard"], summary="Analytics")
    def analytics(days: int = 14, who=read):
        with service.reading() as ws:
            data = gather(ws.engine, max(1, min(days, 365)))
            data["destinations"] = destination_metrics(ws.engine)
        body = "".join(
            f"<section id='{sid}'><h2>{html.escape(name)}</h2>{part}</section>" for sid, name, part in sections(data)
        )
        if not data.get("lifetime_models"):
            body = "<p class='muted'>Lifetime value is not scored yet: omnithread clv.</p>" + body
        return _page("Analytics", body)

    @app.get("/dashboard/recommend", response_class=HTMLResponse, tags=["dashboard"], summary="Recommendation explorer")
    def explorer(person: str = "", surface: str = "for_you", store: str = "", product: str = "", who=read):

        options = "".join(f"<option {'selected' if s == surface else ''}>{s}</option>" for s in SURFACES)
        form = (
            f"<form method='get'><input name='person' placeholder='person or identifier' "
            f"value='{html.escape(person)}'> <select name='surface'>{options}</select> "
            f"<input name='store' placeholder='store' value='{html.escape(store)}'> "
            f"<input name='product' placeholder='product' value='{html.escape(product)}'> "
            "<button id='go'>Recommend</button></form>"
        )
        if not (person or surface in ("trending", "similar", "bought_together")):
            return _page("Recommendation explorer", form)
        with service.reading():
            try:
                answer = service.recommendations().recommend(
                    person or None,
                    surface,
                    n=10,
                    store=store or None,
                    product=product or None,
                    basket=[product] if product and surface == "bought_together" else None,
                )
                stock = answer.meta.get("availability")
                columns = ["product_id"] + [c for c in ("score", "new") if any(c in i for i in answer.items)]
                result = (
                    (f"<p class='muted'>{html.escape(answer.fallback_reason)}</p>" if answer.fallback_reason else "")
                    + f"<p>surface served: <b id='served'>{answer.surface}</b>"
                    + (f" <span class='muted' id='availability'>(stock: {html.escape(stock)})</span>" if stock else "")
                    + "</p>"
                    + _table([{"new": "", **i} for i in answer.items], columns, cls="recs")
                )
            except OmnithreadError as exc:
                result = f"<p id='error'>{html.escape(str(exc))}</p>"
        service.keys.audit(who, "dashboard recommendations", None, "ok")
        return _page("Recommendation explorer", form + result)


def _search_form(q: str = "") -> str:
    return (
        "<form method='get' action='/dashboard/person'><input id='q' name='q' size='40' "
        f"placeholder='person id, account, device, email or phone' value='{html.escape(q)}'> "
        "<button id='search'>Find person</button></form>"
    )
