"""The analytics report: every figure of the understand stage gathered once (``gather``) and rendered as one
self-contained HTML file (``render``): charts are SVG drawn here with matplotlib and written into the page,
styles are inline, nothing is fetched. The dashboard shows the same sections (``sections``).
"""

from __future__ import annotations

import html
import io
import time
from datetime import UTC, datetime
from typing import Any, Callable

from omnithread.analytics import cohorts, journeys, stores
from omnithread.analytics.audiences import list_audiences
from omnithread.engine.base import Engine

__all__ = ["gather", "render", "sections", "svg_chart", "html_table", "STYLE"]

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222}header{background:#1d3557;color:#fff;padding:.6em 1.2em}
header a{color:#fff;margin-right:1.2em;text-decoration:none}main{padding:1em 1.5em;max-width:70em}
table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border-bottom:1px solid #ddd;padding:.25em .7em;
text-align:left;font-size:.9em}th{background:#f1f3f5}.num{text-align:right}.tiles{display:flex;gap:1em;flex-wrap:wrap}
.tile{border:1px solid #ddd;border-radius:6px;padding:.6em 1em}.tile b{display:block;font-size:1.5em}
form{margin:.5em 0 1em}input,select{padding:.3em}.muted{color:#777}section{margin-bottom:2em}
"""


def svg_chart(draw: Callable[[Any], None], size: tuple[float, float] = (8, 3)) -> str:
    """An SVG chart drawn by ``draw(ax)`` with matplotlib, as text to write into a page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    draw(ax)
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg")
    plt.close(fig)
    text = out.getvalue()
    return text[text.index("<svg") :]


def html_table(rows: list[dict], columns: list[str] | None = None, cls: str = "", small: int = 4) -> str:
    """Rows as an HTML table, every value escaped; numbers right-aligned with thousands separators, numbers
    under 1 with ``small`` decimals (shares, probabilities), others with 2."""
    if not rows:
        return "<p class='muted'>none</p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            if isinstance(v, int) and not isinstance(v, bool):
                text = f"{v:,}"
            elif isinstance(v, float):
                text = f"{v:,.{small}f}" if 0 < abs(v) < 1 else f"{v:,.2f}"
            else:
                text = html.escape("" if v is None else str(v))
            cells.append(f"<td class='{'num' if num else ''}'>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='{cls}'><tr>{head}</tr>{''.join(body)}</table>"


def gather(engine: Engine, days: int = 14, validation: dict | None = None) -> dict:
    """Every figure the report shows, as plain values (also the ``--json`` answer). Destinations' delivery
    figures belong to a later stage: the caller adds them as ``destinations`` (rows) before rendering."""
    started = time.perf_counter()
    out: dict[str, Any] = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds")}
    out["log"] = engine.rows(
        "SELECT count(*) AS events, min(event_at) AS first_event_at, max(event_at) AS last_event_at FROM events"
    )[0]
    out["persons"] = engine.scalar("SELECT count(*) FROM persons") if engine.has_table("persons") else None
    if engine.has_table("lifetime_models"):
        out["lifetime_models"] = engine.rows("SELECT * FROM lifetime_models ORDER BY channel_group")
        out["lifetime_top"] = engine.rows(
            "SELECT person_id, frequency, round(p_alive, 4) AS p_alive, round(expected_orders, 3) AS expected_orders,"
            " round(expected_order_value, 2) AS expected_order_value, round(clv, 2) AS clv,"
            " round(clv_online, 2) AS clv_online, round(clv_store, 2) AS clv_store"
            " FROM lifetime_values WHERE clv IS NOT NULL ORDER BY clv DESC, person_id LIMIT 15"
        )
        out["lifetime_total"] = engine.rows(
            "SELECT count(*) AS persons, round(sum(clv), 2) AS clv, round(sum(clv_online), 2) AS clv_online,"
            " round(sum(clv_store), 2) AS clv_store, round(avg(p_alive), 4) AS mean_p_alive FROM lifetime_values"
        )[0]
    out["lifetime_validation"] = validation
    out["stores"] = stores.store_performance(engine)
    out["hourly"] = stores.hourly_traffic(engine)
    out["shelf_products"] = stores.shelf_performance(engine, limit=15)
    out["journeys"] = journeys.journeys(engine, days)
    out["revenue"] = cohorts.revenue_by_month(engine)
    out["cohorts"] = cohorts.cohorts(engine) if engine.has_table("profiles") else []
    out["rfm"] = cohorts.rfm_segments(engine)
    out["audiences"] = list_audiences(engine)
    out["gather_seconds"] = round(time.perf_counter() - started, 3)
    return out


def _bars(ax, labels: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(labels))], values, width=width, label=name)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(labels))])
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=8)


def sections(data: dict) -> list[tuple[str, str, str]]:
    """The report's sections as (id, title, HTML), charts included: the file's and the dashboard's."""
    out = []
    log = data["log"]
    tiles = [
        ("events", f"{log['events']:,}"),
        ("persons", f"{data['persons']:,}" if data.get("persons") is not None else "not resolved"),
        ("first event", str(log["first_event_at"])[:10]),
        ("last event", str(log["last_event_at"])[:10]),
    ]
    total = data.get("lifetime_total")
    if total:
        tiles.append(("lifetime value, next year", f"{total['clv'] or 0:,.0f}"))
    out.append(
        (
            "summary",
            "Summary",
            "<div class='tiles'>"
            + "".join(f"<div class='tile' id='tile-{k.replace(' ', '-')}'>{k}<b>{v}</b></div>" for k, v in tiles)
            + "</div>",
        )
    )

    # lifetime value
    if data.get("lifetime_models"):
        body = "<p>BG/NBD (purchases) and Gamma-Gamma (spend), fitted per channel group; value discounted.</p>"
        body += html_table(data["lifetime_models"])
        top = data.get("lifetime_top") or []
        if top:
            body += "<h3>Highest lifetime value</h3>" + html_table(top)
        validation = data.get("lifetime_validation")
        if validation and validation.get("skipped"):
            body += f"<p class='muted'>Held-out validation skipped: {html.escape(validation['skipped'])}</p>"
        elif validation:
            rows = [
                {"forecast": name, **validation[f"{name}_forecast"]} for name in ("bgnbd", "naive")
            ]  # fmt: skip
            body += (
                f"<h3>Held-out {validation['holdout_days']} days: predicted against actual purchase days</h3>"
                + html_table(rows)
            )
            groups = validation["by_frequency"]
            body += svg_chart(
                lambda ax: _bars(
                    ax,
                    [g["frequency"] for g in groups],
                    {k: [g[k] for g in groups] for k in ("actual", "predicted", "naive")},
                    "purchase days per person",
                )
            )
        out.append(("lifetime", "Lifetime value", body))

    # stores
    body = html_table(data["stores"])
    hourly = data["hourly"]
    if hourly:
        store_ids = sorted({h["store_id"] for h in hourly})

        def draw_hours(ax):
            for store_id in store_ids:
                counts = {h["hour"]: h["entries"] or h["orders"] for h in hourly if h["store_id"] == store_id}
                ax.plot(range(24), [counts.get(hour, 0) for hour in range(24)], label=store_id)
            ax.set_xlabel("hour of day (UTC)")
            ax.set_ylabel("entries, else orders")
            ax.legend(fontsize=8)

        body += "<h3>Traffic by hour</h3>" + svg_chart(draw_hours)
    if data["shelf_products"]:
        body += "<h3>Checkout-free shelves: pick-to-buy and put-backs by product</h3>" + html_table(
            data["shelf_products"]
        )
    out.append(("stores", "Stores", body))

    # journeys
    j = data["journeys"]
    if j["with_resolution"]:
        kinds = ("webrooming", "showrooming")
        rows = []
        for kind in kinds:
            for label, side in (("with resolution", j["with_resolution"]), ("without", j["without_resolution"])):
                rows.append({"journey": kind, "identity": label, **side[kind]})
        touched = [
            {"identity": label, **side["store_touched_by_online"]}
            for label, side in (("with resolution", j["with_resolution"]), ("without", j["without_resolution"]))
        ]
        body = (
            f"<p>Within {j['days']} days. Without identity resolution each event keeps its own id, as a "
            "retailer without the connection sees it.</p>"
            + html_table(rows)
            + "<h3>Store revenue touched by online activity</h3>"
            + html_table(touched)
            + svg_chart(
                lambda ax: _bars(
                    ax,
                    ["webrooming", "showrooming", "store revenue touched"],
                    {
                        label: [
                            side["webrooming"]["revenue"],
                            side["showrooming"]["revenue"],
                            side["store_touched_by_online"]["touched_revenue"],
                        ]
                        for label, side in (
                            ("with resolution", j["with_resolution"]),
                            ("without", j["without_resolution"]),
                        )
                    },
                    "revenue",
                )
            )
        )
    else:
        body = "<p class='muted'>persons are not resolved yet: run resolve</p>"
    out.append(("journeys", "Cross-channel journeys", body))

    # revenue and cohorts
    revenue = data["revenue"]
    body = html_table(revenue)
    if revenue:
        months = sorted({str(r["month"])[:7] for r in revenue})
        net = {m: 0.0 for m in months}
        refunded = {m: 0.0 for m in months}
        for r in revenue:
            net[str(r["month"])[:7]] += r["net_revenue"]
            refunded[str(r["month"])[:7]] += r["refunded"]
        body += svg_chart(
            lambda ax: _bars(ax, months, {"net": list(net.values()), "refunded": list(refunded.values())}, "revenue")
        )
    if data["cohorts"]:
        body += "<h3>Cohorts: share ordering again, by month of first order and its channel</h3>"
        body += html_table(data["cohorts"])
    out.append(("revenue", "Revenue and cohorts", body))

    rfm = data["rfm"]
    body = html_table(rfm)
    if rfm:
        body += svg_chart(
            lambda ax: _bars(ax, [r["segment"] for r in rfm], {"revenue": [r["revenue"] for r in rfm]}, "revenue")
        )
    out.append(("rfm", "RFM segments", body))

    audiences = data.get("audiences") or []
    if audiences:
        out.append(("audiences", "Audiences", html_table(audiences, ["name", "members", "rule", "description"])))
    destinations = data.get("destinations") or []
    if destinations:
        out.append(("destinations", "Destinations", html_table(destinations)))
    return out


def render(data: dict, title: str = "omnithread analytics") -> str:
    """One self-contained HTML page of every section."""
    drawn = sections(data)
    nav = "".join(f"<a href='#{sid}'>{html.escape(name)}</a>" for sid, name, _ in drawn)
    parts = "".join(f"<section id='{sid}'><h2>{html.escape(name)}</h2>{body}</section>" for sid, name, body in drawn)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><header><b>{html.escape(title)}</b> &nbsp; {nav}</header>"
        f"<main><p class='muted'>Generated {html.escape(data['generated_at'])}</p>{parts}</main></body></html>"
    )
