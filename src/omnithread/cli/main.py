"""``omnithread``: the command line over every stage.

Each command imports the stage it runs inside its function: that defers heavy dependencies (scipy and the
recommenders, the web framework, matplotlib) to the commands that need them, so ``omnithread keys list`` or a
usage error answers in a quarter of a second instead of loading them all. It hides no cycle: the layers
contract in ``pyproject.toml`` holds for these imports as for any other.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from omnithread.analytics import ANALYTICS_VIEWS
from omnithread.api.jobs import report_progress
from omnithread.config import Settings
from omnithread.errors import ConfigError, ConflictError, InvalidRequestError, OmnithreadError
from omnithread.ingest import IngestReport, replay_rejected
from omnithread.sim import WorldConfig

# Tracebacks never print local variables: they may hold a shopper's raw email or phone.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="omnithread: one thread from sensing to service for retailers with shops and stores.",
)
rejected_app = typer.Typer(no_args_is_help=True, help="List and replay events that failed validation.")
app.add_typer(rejected_app, name="rejected")
sensing_app = typer.Typer(
    no_args_is_help=True, help="Checkout-free stores: simulate sensor recordings, turn them into receipts, score them."
)
app.add_typer(sensing_app, name="sensing")
console = Console()
err = Console(stderr=True)

DataDir = typer.Option(
    None, "--data-dir", envvar="OMNITHREAD_DATA_DIR", help="Data directory (default ./omnithread-data)."
)
JsonFlag = typer.Option(False, "--json", help="Print one JSON object instead of tables.")


def _settings(data_dir: Optional[Path]) -> Settings:
    return Settings.from_env(data_dir)


def _print_json(value) -> None:
    sys.stdout.write(orjson.dumps(value, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")


def _table(title: str, rows: list[dict], columns: list[str] | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    columns = columns or (list(rows[0]) if rows else [])
    for column in columns:
        table.add_column(column, justify="right" if rows and isinstance(rows[0].get(column), (int, float)) else "left")
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    return table


def _cell(value) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if hasattr(value, "isoformat") and hasattr(value, "hour"):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def _report_tables(report: IngestReport) -> list[Table]:
    files = _table(
        "Sources",
        [dict(f.as_dict(), source=Path(f.source).name) for f in report.files],
        ["source", "accepted", "duplicates", "rejected"],
    )
    totals = _table(
        "Import",
        [
            {
                "received": report.received,
                "accepted": report.accepted,
                "duplicates": report.duplicates,
                "rejected": report.rejected,
                "seconds": round(report.seconds, 2),
            }
        ],
    )
    reasons = _table(
        "Rejected by reason",
        [{"reason": k, "events": v} for k, v in report.by_reason.most_common()],
        ["reason", "events"],
    )
    return [files, totals, reasons]


def _fail(error: OmnithreadError) -> None:
    err.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def ingest(
    paths: list[Path] = typer.Argument(..., help="JSON Lines, Segment batch JSON, till CSV or Parquet files."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Import files into the event log: accepted, duplicates and rejected by reason."""
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            total = sum(p.stat().st_size for p in paths if p.is_file())
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
                disable=as_json,
            ) as bar:
                task = bar.add_task("importing", total=total)
                done = {"before": 0}

                def progress(n: int, _task=task) -> None:
                    bar.update(_task, completed=done["before"] + n)
                    report_progress(f"{(done['before'] + n) / max(total, 1):.0%} of {total / 1e6:,.1f} MB")

                ingestor = ws.ingestor()
                for path in paths:
                    ingestor.ingest_file(path, progress)
                    done["before"] += path.stat().st_size if path.is_file() else 0
                report = ingestor.report
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(report.as_dict())
    else:
        for table in _report_tables(report):
            console.print(table)


def _import_reference(kind: str, paths: list[Path], data_dir: Optional[Path], as_json: bool) -> None:
    from omnithread.ingest.reference import reference_summary
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            report = ws.ingestor().ingest_reference(paths, kind)
            summary = reference_summary(ws.engine)
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json({**report.as_dict(), "stored": summary})
        return
    for table in _report_tables(report):
        console.print(table)
    if kind == "catalogue" and summary["catalogue"]:
        console.print(
            f"Catalogue: {summary['catalogue']['products']:,} products, {summary['catalogue']['off_sale']:,} off sale"
        )
    if kind == "inventory" and summary["inventory"]:
        console.print(_table("Inventory by location", summary["inventory"]))


@app.command()
def catalogue(
    paths: list[Path] = typer.Argument(
        ...,
        help="CSV (with a header), JSON Lines or Parquet files: product_id, "
        "name, category, price, available, launched_at.",
    ),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Import the product catalogue: a row replaces its product's; refused rows are kept with their reasons."""
    _import_reference("catalogue", paths, data_dir, as_json)


@app.command()
def inventory(
    paths: list[Path] = typer.Argument(
        ...,
        help="CSV (with a header), JSON Lines or Parquet files: store_id (or 'online'), product_id, quantity, as_of.",
    ),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Import stock levels per store (or 'online'); a newer count is never replaced by an older one."""
    _import_reference("inventory", paths, data_dir, as_json)


@app.command()
def stats(data_dir: Optional[Path] = DataDir, as_json: bool = JsonFlag) -> None:
    """The event log by channel, by event and by day; the catalogue and stock imported."""
    from omnithread.ingest.reference import reference_summary
    from omnithread.workspace import Workspace

    with Workspace(_settings(data_dir)) as ws:
        result: dict[str, Any] = dict(ws.log.stats())
        result["rejected_by_reason"] = ws.log.rejected_summary()
        result["reference"] = reference_summary(ws.engine)
    if as_json:
        _print_json(result)
        return
    console.print(_table("Events by channel", result["by_channel"]))
    console.print(_table("Events by name", result["by_event"]))
    console.print(_table("Events by day", result["by_day"]))
    console.print(_table("Open rejected events by reason", result["rejected_by_reason"], ["reason", "events"]))
    catalogue, stock = result["reference"]["catalogue"], result["reference"]["inventory"]
    console.print(
        f"Catalogue: {catalogue['products']:,} products, {catalogue['off_sale']:,} off sale"
        if catalogue
        else "Catalogue: none imported (omnithread catalogue FILE)"
    )
    if stock:
        console.print(_table("Inventory by location", stock))
    else:
        console.print("Inventory: none imported (omnithread inventory FILE); stock is inferred from recent sales")


@rejected_app.command("list")
def rejected_list(
    reason: Optional[str] = typer.Option(None, help="Only this reason code, e.g. invalid_json."),
    status: str = typer.Option("open", help="open, replayed, or all."),
    limit: int = typer.Option(50, help="At most this many."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Rejected events with every reason, newest first."""
    from omnithread.workspace import Workspace

    with Workspace(_settings(data_dir)) as ws:
        rows = ws.log.rejected(status=None if status == "all" else status, reason=reason, limit=limit)
    items = [
        {
            "rejected_id": r["rejected_id"],
            "source": r["source"],
            "format": r["format"],
            "status": r["status"],
            "attempts": r["attempts"],
            "reasons": [x["message"] for x in json.loads(r["reasons"])],
        }
        for r in rows
    ]
    if as_json:
        _print_json(items)
        return
    table = Table(title=f"Rejected events ({status})", title_justify="left")
    for column in ("rejected_id", "source", "format", "reasons"):
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(item["rejected_id"], item["source"], item["format"], "\n".join(item["reasons"]))
    console.print(table)


@rejected_app.command("show")
def rejected_show(rejected_id: str, data_dir: Optional[Path] = DataDir) -> None:
    """One rejected event: its reasons and its payload (identifiers pseudonymised)."""
    from omnithread.workspace import Workspace

    with Workspace(_settings(data_dir)) as ws:
        rows = ws.log.rejected(status=None, ids=[rejected_id])
    if not rows:
        err.print(f"[red]error:[/red] no rejected event with id {rejected_id!r}")
        raise typer.Exit(2)
    row = rows[0]
    _print_json(
        {
            "rejected_id": row["rejected_id"],
            "source": row["source"],
            "format": row["format"],
            "status": row["status"],
            "attempts": row["attempts"],
            "reasons": json.loads(row["reasons"]),
            "payload": json.loads(row["payload"]) if row["payload"] else "<encrypted: the input did not parse>",
        }
    )


@rejected_app.command("replay")
def rejected_replay(
    ids: Optional[list[str]] = typer.Option(None, "--id", help="Replay only these ids (repeatable)."),
    reason: Optional[str] = typer.Option(None, help="Replay only events rejected for this reason code."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Send open rejected events through import again, after a fix."""
    from omnithread.workspace import Workspace

    with Workspace(_settings(data_dir)) as ws:
        report, replayed, failing = replay_rejected(ws.ingestor(), ids=ids or None, reason=reason)
    result = {
        "replayed": len(replayed),
        "still_failing": len(failing),
        "accepted": report.accepted,
        "duplicates": report.duplicates,
        "new_rejected": report.rejected,
        "still_failing_ids": failing,
    }
    if as_json:
        _print_json(result)
    else:
        console.print(_table("Replay", [{k: v for k, v in result.items() if k != "still_failing_ids"}]))


@app.command()
def resolve(
    incremental: bool = typer.Option(False, "--incremental", help="Fold in only events loaded since the last resolve."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Connect identifiers into persons and rebuild their profiles; report the connection."""
    from omnithread.flows import resolve_persons, update_persons
    from omnithread.identity import connection_summary
    from omnithread.profile import skipped_rows
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            if incremental:
                result = update_persons(ws).as_dict()
            else:
                report, profiles = resolve_persons(ws)
                summary = connection_summary(ws.engine)
                result = {
                    **report.as_dict(),
                    "connection": summary,
                    "profiles": profiles,
                    "skipped_rows": skipped_rows(ws.engine, "profiles"),
                }
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(result)
    elif incremental:
        console.print(_table("Incremental update", [{k: v for k, v in result.items() if k != "refused"}]))
    else:
        _print_resolve(result)


@app.command()
def clv(
    horizon_days: int = typer.Option(365, "--horizon-days", help="Days of future purchases valued."),
    discount: float = typer.Option(0.10, "--discount", help="Annual discount rate."),
    validate: int = typer.Option(
        0, "--validate", help="Also hold out the log's last N days: fit before, compare predicted and actual."
    ),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Lifetime value per person (BG/NBD and Gamma-Gamma; joined, online, store), written to the profiles."""
    from omnithread.analytics.lifetime import validate_lifetime
    from omnithread.flows import score_lifetime
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            result = score_lifetime(ws, horizon_days=horizon_days, annual_discount=discount).to_dict()
            if validate:
                result["validation"] = validate_lifetime(ws.engine, validate)
            result["top"] = ws.engine.rows(
                "SELECT person_id, frequency, p_alive, expected_orders, expected_order_value, clv, clv_online, "
                "clv_store FROM lifetime_values WHERE clv IS NOT NULL ORDER BY clv DESC, person_id LIMIT 10"
            )
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(result)
        return
    fits = []
    for group, fit in result["fits"].items():
        row = {"group": group, "persons": fit["persons"], "repeat buyers": fit["repeat_buyers"]}
        for name in ("bgnbd", "gamma_gamma"):
            row.update({k: f"{v:.4g}" for k, v in fit.get(name, {}).items()})
        row["note"] = fit.get("skipped", "")
        fits.append(row)
    console.print(_table("Lifetime value models", fits))
    top = [{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()} for r in result["top"]]
    console.print(_table(f"Highest lifetime value ({horizon_days} days, {discount:.0%} a year)", top))
    if validate:
        v = result["validation"]
        rows = [
            {"forecast": name, **{k: v[f"{name}_forecast"][k] for k in ("total", "total_error_pct", "mae", "rmse")}}
            for name in ("bgnbd", "naive")
        ]
        title = f"Holdout of {validate} days: {v['persons']} buyers made {v['actual_total']} purchase days"
        console.print(_table(title, rows))
        console.print(_table("By purchases in calibration (mean per person)", v["by_frequency"]))


def _print_understand(analytics: dict) -> None:
    joined = analytics["lifetime"]["joined"]
    check = analytics["lifetime_validation"]
    total = analytics["lifetime_total"] or {}
    if "bgnbd" not in joined:
        console.print(f"Lifetime value: not fitted ({joined.get('skipped', 'too few buyers')}).")
    else:
        held = (
            f"on {check['holdout_days']} held-out days it forecast {check['bgnbd_forecast']['total']:,.0f} purchase "
            f"days for {check['actual_total']:,} made (MAE {check['bgnbd_forecast']['mae']:.3f}; a naive forecast "
            f"{check['naive_forecast']['mae']:.3f})"
            if "bgnbd_forecast" in check
            else f"no held-out check ({check.get('skipped', 'not run')})"
        )
        console.print(
            f"Lifetime value (BG/NBD, Gamma-Gamma): {joined['persons']:,} buyers, {total.get('clv') or 0:,.0f} "
            f"expected over the next year (online {total.get('clv_online') or 0:,.0f}, store "
            f"{total.get('clv_store') or 0:,.0f}); {held}."
        )
    j = analytics["journeys"]
    if j["with_resolution"]:
        w, s, t = (j["with_resolution"][k] for k in ("webrooming", "showrooming", "store_touched_by_online"))
        console.print(
            f"Cross-channel within {j['days']} days, seen only through the identity map: webrooming "
            f"{w['revenue']:,.0f} ({w['orders']:,} store orders), showrooming {s['revenue']:,.0f}, store revenue "
            f"touched by online {t['touched_revenue']:,.0f} ({t['touched_share'] or 0:.1%}); without resolution "
            f"{j['without_resolution']['store_touched_by_online']['touched_revenue']:,.0f}."
        )
    console.print(f"Report: {analytics['report']}")


@app.command()
def report(
    out: Optional[Path] = typer.Option(
        None, "--out", help="The HTML file to write (default: report.html in the data directory)."
    ),
    days: int = typer.Option(14, "--days", help="The window of cross-channel journeys, in days."),
    validate: int = typer.Option(0, "--validate", help="Also validate lifetime value on the log's last N days."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Write the analytics report: one self-contained HTML file (lifetime value, stores, journeys, cohorts,
    RFM); prints its path."""
    from omnithread.flows import write_report
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            started = time.perf_counter()
            path, data = write_report(
                ws, out or ws.settings.data_dir / "report.html", days=days, holdout_days=validate or None
            )
            seconds = round(time.perf_counter() - started, 3)
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json({"report": str(path), "seconds": seconds, "figures": data})
    else:
        console.print(f"Report written in {seconds:.1f} s: {path}")


@app.command()
def analytics(
    view: str = typer.Argument(..., help="One of: " + ", ".join(ANALYTICS_VIEWS)),
    store: Optional[str] = typer.Option(None, "--store", help="One store (hourly, shelves, plates)."),
    days: int = typer.Option(14, "--days", help="The window of cross-channel journeys, in days."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """One view of the understand stage, as a table or JSON."""
    from omnithread.flows import analytics_view
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            result = analytics_view(ws, view, store=store, days=days)
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(result)
    elif isinstance(result, list):
        console.print(_table(view, result))
    elif view == "journeys":
        sides = [(name, result[name]) for name in ("with_resolution", "without_resolution") if result[name]]
        rows = [
            {"journey": kind, "identity": name.replace("_", " "), **side[kind]}
            for kind in ("webrooming", "showrooming")
            for name, side in sides
        ]
        console.print(_table(f"Journeys within {result['days']} days", rows))
        touched = [{"identity": name.replace("_", " "), **side["store_touched_by_online"]} for name, side in sides]
        console.print(_table("Store revenue touched by online activity", touched))
    else:
        for key, value in result.items():
            if isinstance(value, list):
                console.print(_table(key, value))


def _print_resolve(result: dict) -> None:
    console.print(
        _table("Identifiers by type", [{"type": k, "identifiers": v} for k, v in result["identifiers"].items()])
    )
    dropped = [{"reason": k, "links": v} for k, v in result["links_dropped"].items()]
    console.print(
        _table(
            "Links",
            [
                {
                    "kept": result["links_kept"],
                    "dropped": sum(result["links_dropped"].values()),
                    "probabilistic": result["probabilistic_links"],
                    "blocked identifiers": result["blocked_identifiers"],
                    "split components": result["split_components"],
                }
            ],
        )
    )
    if result.get("probabilistic_skipped"):
        console.print(f"Probabilistic matching skipped: {result['probabilistic_skipped']}")
    if dropped:
        console.print(_table("Dropped links by reason", dropped))
    c = result["connection"]
    share = c["store_revenue_known_online_customer_share"]
    attached = (
        f"{share:.1%} of store revenue is now attached to a known online customer"
        if share is not None
        else "there is no store revenue yet"
    )
    skipped = result.get("skipped_rows") or []
    if skipped:
        shown = ", ".join(f"{r['message_id']} {r['field']}={r['value']}" for r in skipped[:5])
        console.print(
            f"Profiles left out {len(skipped):,} order line(s) whose numbers lie outside the schema's "
            f"ranges (stored before the door checked them; table skipped_rows): {shown}"
        )
    console.print(
        f"{c['online_identities']:,} online and {c['store_identities']:,} store identities became "
        f"{result['persons']:,} persons ({result['persons_with_account']:,} with an online account); "
        f"{attached}."
    )


@app.command()
def person(
    key: str = typer.Argument(..., help="A person id (p_...), an account or device id, an email or a phone."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """One person: identifiers, the evidence that joined them, and activity by channel."""
    from omnithread.identity import describe_person, find_person
    from omnithread.profile import get_profile
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            if not ws.engine.has_table("identity_map"):
                err.print("[red]error:[/red] no persons yet: run `omnithread resolve` first")
                raise typer.Exit(2)
            found = describe_person(ws.engine, find_person(ws.engine, key, ws.pseudonymiser))
            found["profile"] = get_profile(ws.engine, found["person_id"])
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(found)
        return
    console.print(f"[bold]{found['person_id']}[/bold]")
    console.print(_table("Identifiers", found["identifiers"]))
    console.print(
        _table(
            "Evidence",
            [{**link, "rules": ", ".join(link["rules"])} for link in found["links"]],
            ["a", "b", "events", "rules", "first_message_id", "status", "reason"],
        )
    )
    console.print(_table("Activity by channel", found["activity"]))
    if found["profile"]:
        profile = found["profile"]
        shown = {k: v for k, v in profile.items() if k not in ("by_channel", "revenue_by_store")}
        console.print(_table("Profile", [{"field": k, "value": _cell(v)} for k, v in shown.items()]))


def _world(
    people: int, days: int, seed: int, products: int, till_stores: int, checkout_free_stores: int, hard: bool
) -> WorldConfig:
    base = WorldConfig.hard() if hard else WorldConfig.demo()
    return base.with_(
        people=people,
        days=days,
        seed=seed,
        products=products,
        till_stores=till_stores,
        checkout_free_stores=checkout_free_stores,
    )


@app.command()
def simulate(
    out: Path = typer.Argument(..., help="Folder for sources/, truth/ and manifest.json."),
    people: int = typer.Option(3_000),
    days: int = typer.Option(60),
    seed: int = typer.Option(7),
    products: int = typer.Option(600),
    till_stores: int = typer.Option(3),
    checkout_free_stores: int = typer.Option(1),
    hard: bool = typer.Option(False, help="More noise: typos, forgotten cards, shared devices, skewed clocks."),
    as_json: bool = JsonFlag,
) -> None:
    """Write a simulated retailer's raw sources and, apart, its ground truth."""
    from omnithread.sim import simulate as run

    try:
        config = _world(people, days, seed, products, till_stores, checkout_free_stores, hard)
    except OmnithreadError as error:
        _fail(error)
    with Progress(
        SpinnerColumn(),
        TextColumn("simulating {task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json,
    ) as bar:
        bar.add_task(f"{people:,} people over {days} days")
        manifest = run(config, out)
    if as_json:
        _print_json(manifest)
    else:
        console.print(
            f"wrote {len(manifest['sources'])} source files to {out / 'sources'} "
            f"({sum(manifest['lines'].values()):,} JSON lines) and the truth to {out / 'truth'}"
        )


@app.command()
def demo(
    people: int = typer.Option(3_000),
    days: int = typer.Option(60),
    seed: int = typer.Option(7),
    sources: Optional[Path] = typer.Option(None, help="Keep the simulated sources and truth here."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Simulate a small retailer and run the whole thread over it on the embedded default."""
    from omnithread.demo import run_demo

    settings = _settings(data_dir)
    config = WorldConfig.demo(people=people, days=days, seed=seed)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json,
    ) as bar:
        task = bar.add_task("starting")

        def step(name: str) -> None:
            bar.update(task, description=name)
            report_progress(name)

        run = run_demo(settings, config, sources, progress=step)
    if as_json:
        _print_json(run.as_dict())
        return
    _print_demo(run)


def _print_demo(run) -> None:
    world = run.as_dict()["world"]
    console.rule("[bold]omnithread demo")
    console.print(
        f"A simulated retailer: {world['people']:,} people over {world['days']} days, stores "
        f"{', '.join(world['stores'])} ({', '.join(world['checkout_free_stores'])} checkout-free). "
        f"Data directory: {run.settings.data_dir}"
    )
    for table in _report_tables(run.ingest):
        console.print(table)
    console.print(_table("Events by channel", run.stats["by_channel"]))
    console.print(_table("Events by name", run.stats["by_event"]))
    stored = run.reference.get("stored") or {}
    if stored.get("catalogue") and stored.get("inventory"):
        stock = stored["inventory"]
        console.print(
            f"Catalogue: {stored['catalogue']['products']:,} products ({stored['catalogue']['off_sale']:,} "
            f"off sale); inventory of {len(stock)} locations: {sum(r['products'] for r in stock):,} rows, "
            f"{sum(r['out_of_stock'] for r in stock):,} out of stock."
        )
    _print_resolve({**run.identity, "connection": run.connection})
    accuracy = run.accuracy
    console.print(
        f"Against the simulator's truth: pairwise precision {accuracy['pairwise']['precision']:.3f}, "
        f"recall {accuracy['pairwise']['recall']:.3f}, F1 {accuracy['pairwise']['f1']:.3f}; "
        f"over-merged persons {accuracy['over_merge_rate']:.1%}, "
        f"under-merged true persons {accuracy['under_merge_rate']:.1%}."
    )
    sensing = run.sensing
    if sensing.get("trips_sensed"):
        console.print(
            f"Checkout-free store: {sensing['trips_sensed']:,} trips of the last {run.sensed_days:g} days "
            f"sensed from {sensing['plate_messages']:,} plate messages and "
            f"{sensing['camera_observations']:,} camera observations; receipts against what shoppers "
            f"really took: F1 {sensing['f1']:.3f}, exact {sensing['exact_receipts']:.1%}, "
            f"{sensing['review_share']:.1%} sent to review; {sensing.get('receipts_in_log', 0):,} sensed "
            f"receipts in the log ({sensing['trips_from_history']:,} earlier trips from the store's history)."
        )
    if run.recommend.get("example"):
        ex = run.recommend["example"]
        console.print(
            f"Recommendations trained ({run.recommend['stats']['model']['model']}, "
            f"{run.recommend['stats']['interactions']:,} interactions); for you, {ex['person_id']}: "
            + ", ".join(i["product_id"] for i in ex["items"])
        )
    if run.analytics:
        _print_understand(run.analytics)
    if run.ablation:
        _print_ablation(run.ablation)
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in run.seconds.items())
    d = run.settings.data_dir
    console.print(
        f"Dashboard: omnithread keys create --role read --data-dir {d}; omnithread serve --data-dir {d}; "
        "then open http://127.0.0.1:8080/dashboard (user name: the read key, no password)."
    )
    console.print(
        f"Took {seconds}. Explore with: omnithread stats, omnithread rejected list (--data-dir {run.settings.data_dir})"
    )


@sensing_app.command("simulate")
def sensing_simulate(
    out: Path = typer.Argument(..., help="Directory to write the recording to."),
    family: str = typer.Option("crowded", help="simple, crowded, misplaced, same_weight or handoff."),
    trips: int = typer.Option(20, min=1),
    seed: int = typer.Option(0),
    gondolas: Optional[int] = typer.Option(None, help="Gondolas in the store (default 20 crowded, 6 otherwise)."),
    shuffle: float = typer.Option(0.5, help="Deliver messages up to this many seconds out of order."),
    duplicates: float = typer.Option(0.01, help="Share of messages delivered twice."),
    as_json: bool = JsonFlag,
) -> None:
    """Record gate, camera and shelf-weight signals of a simulated checkout-free store, with its truth."""
    from omnithread.sensing.recording import write_recording
    from omnithread.sim.sensors import FAMILIES, render_scene, scenario

    if family not in FAMILIES:
        _fail(InvalidRequestError("family", family, f"one of {', '.join(FAMILIES)}"))
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json,
    ) as bar:
        bar.add_task(f"simulating {trips} {family} trips")
        signals = render_scene(scenario(family, trips, seed, gondolas=gondolas))
        written = write_recording(signals, out, shuffle=shuffle, duplicates=duplicates, seed=seed)
    result = {
        "out": str(out),
        "family": family,
        "trips": len(signals.truth["trips"]),
        "plates": signals.layout.plates,
        **written,
    }
    if as_json:
        _print_json(result)
    else:
        console.print(
            f"Recorded {result['trips']} trips ({family}) in a store of {result['plates']:,} plates: "
            f"{written['store_seconds']:,} s of store time, {written['plate_messages']:,} plate messages "
            f"and {written['other_messages']:,} camera and gate messages in {out}"
        )


def _run_sensing(recording: Path, as_json: bool):
    from omnithread.sensing.recording import run_recording

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json,
    ) as bar:
        task = bar.add_task("sensing")
        return run_recording(recording, progress=lambda n: bar.update(task, description=f"sensing: {n:,} messages"))


@sensing_app.command("run")
def sensing_run(
    recording: Path = typer.Argument(..., help="A recording directory (layout.json, plates.parquet, messages.jsonl)."),
    out: Optional[Path] = typer.Option(None, help="Where to write the events (default RECORDING/events.jsonl)."),
    ingest_events: bool = typer.Option(False, "--ingest", help="Also import the events into the event log."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Turn recorded signals into receipts and store events; unusable messages go to problems.jsonl."""
    import orjson

    try:
        engine, receipts = _run_sensing(recording, as_json)
    except OmnithreadError as error:
        _fail(error)
    out = out or recording / "events.jsonl"
    with open(out, "wb") as handle:
        for r in receipts:
            for ev in r.events:
                handle.write(orjson.dumps(ev) + b"\n")
    problems_path = out.parent / "problems.jsonl"
    with open(problems_path, "wb") as handle:
        for p in engine.problems:
            handle.write(orjson.dumps(p.as_dict()) + b"\n")
    result = {
        "messages": engine.messages,
        "duplicates_ignored": engine.duplicates,
        "weight_events": len(engine.weight_events),
        "receipts": len(receipts),
        "for_review": sum(r.review for r in receipts),
        "problems": len(engine.problems),
        "events_file": str(out),
        "problems_file": str(problems_path),
    }
    if ingest_events:
        from omnithread.workspace import Workspace

        with Workspace(_settings(data_dir)) as ws:
            result["ingest"] = ws.ingestor().ingest_paths([out]).as_dict()
    if as_json:
        _print_json(
            {
                **result,
                "receipts_detail": [
                    {
                        "visit_id": r.visit_id,
                        "lines": {p: {"quantity": q, "confidence": round(c, 4)} for p, (q, c) in r.lines.items()},
                        "review": r.review,
                        "reasons": r.reasons,
                        "aisle_dwell": r.dwell,
                    }
                    for r in receipts
                ],
            }
        )
        return
    rows = [
        {
            "visit": r.visit_id,
            "items": sum(r.basket.values()),
            "lines": len(r.basket),
            "lowest confidence": round(min((c for _, c in r.lines.values()), default=1.0), 3),
            "review": "; ".join(r.reasons) if r.review else "",
        }
        for r in receipts
    ]
    console.print(_table("Receipts", rows[:50]))
    if len(rows) > 50:
        console.print(f"... and {len(rows) - 50} more in {out}")
    console.print(
        f"{result['messages']:,} messages ({result['duplicates_ignored']:,} duplicates ignored), "
        f"{result['weight_events']:,} weight changes, {result['receipts']:,} receipts "
        f"({result['for_review']:,} for review), {result['problems']:,} problems -> {problems_path}. "
        f"Events: {out}"
    )
    if engine.problems:
        counts: dict[str, int] = {}
        for p in engine.problems:
            counts[p.problem.code] = counts.get(p.problem.code, 0) + 1
        console.print(_table("Problems by reason", [{"reason": k, "messages": v} for k, v in sorted(counts.items())]))
    if "ingest" in result:
        console.print(
            f"Imported: {result['ingest']['accepted']:,} accepted, {result['ingest']['duplicates']:,} "
            f"duplicates, {result['ingest']['rejected']:,} rejected."
        )


@sensing_app.command("evaluate")
def sensing_evaluate(
    recording: Path = typer.Argument(..., help="A simulated recording (with truth.json)."),
    as_json: bool = JsonFlag,
) -> None:
    """Run the engine over a recording and score its receipts against the truth."""
    import orjson

    from omnithread.sensing.evaluate import evaluate_receipts

    truth_path = recording / "truth.json"
    if not truth_path.is_file():
        _fail(InvalidRequestError("recording", str(recording), "a simulated recording with truth.json"))
    try:
        engine, receipts = _run_sensing(recording, as_json)
    except OmnithreadError as error:
        _fail(error)
    result = evaluate_receipts(
        orjson.loads(truth_path.read_bytes()),
        receipts,
        engine.weight_events,
        engine.layout.plate_ids,
        engine.config.lateness,
    )
    result["sensor_problems"] = len(engine.problems)
    if as_json:
        _print_json(result)
    else:
        console.print(_table("Receipts against truth", [{"measure": k, "value": v} for k, v in result.items()]))


@app.command()
def train(
    new_share: float = typer.Option(0.1, help="Share of slots for new products (0 to 1)."),
    new_days: float = typer.Option(7.0, help="A product is new this many days after it is first seen or launched."),
    available_days: float = typer.Option(
        30.0, help="Where no stock was imported, unsold this long means out of stock."
    ),
    trending_days: float = typer.Option(7.0, help="The window trending counts sales over."),
    repeat_share: float = typer.Option(
        0.2, help="Re-recommend a bought product when at least this share of its buyers bought it again."
    ),
    keep_serving: bool = typer.Option(
        False, "--keep-serving", help="Keep the serving rules of the model this one replaces (the options above aside)."
    ),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Train the recommendation model on the event log (every channel, through the identity map); the serving
    rules given here are kept with the model."""
    from omnithread.flows import current_serving, train_model
    from omnithread.recommend.service import ServingConfig
    from omnithread.workspace import Workspace

    for name, value, low, high in (
        ("--new-share", new_share, 0, 1),
        ("--repeat-share", repeat_share, 0, 1),
        ("--new-days", new_days, 0, 3650),
        ("--available-days", available_days, 0, 3650),
        ("--trending-days", trending_days, 0, 3650),
    ):
        if not low <= value <= high or value != value:
            _fail(InvalidRequestError(name, value, f"a number from {low} to {high}"))
    serving = ServingConfig(
        trending_days=trending_days,
        available_days=available_days,
        new_days=new_days,
        new_product_share=new_share,
        repeat_share=repeat_share,
    )
    try:
        with Workspace(_settings(data_dir)) as ws:
            if keep_serving:
                serving = current_serving(ws) or serving
            service = train_model(ws, serving)
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(service.stats)
    else:
        s = service.stats
        console.print(
            f"Trained {s['model']['model']} on {s['interactions']:,} person-product interactions of "
            f"{s['persons']:,} persons and {s['products']:,} products in {s['fit_seconds']} s."
        )


@app.command()
def recommend(
    person: Optional[str] = typer.Argument(None, help="Person id or any identifier (account, device, email...)."),
    surface: str = typer.Option("for_you", help="for_you, similar, bought_together, in_store or trending."),
    store: Optional[str] = typer.Option(None, help="The store (in_store; trending at one store)."),
    product: Optional[str] = typer.Option(None, help="The product (similar)."),
    basket: Optional[str] = typer.Option(None, help="Comma-separated products (bought_together)."),
    n: int = typer.Option(10, "-n", help="How many."),
    every: bool = typer.Option(
        False, "--all", help="Every person the identity map knows (for_you or in_store), written to --out as Parquet."
    ),
    out: Optional[Path] = typer.Option(None, help="The Parquet file for --all."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Recommendations for a person on any surface, or with --all for everyone (an export for campaigns or a
    cache); trains first if no model was trained yet."""
    from omnithread.recommend.service import Recommendations
    from omnithread.workspace import Workspace

    if every and (person or out is None):
        _fail(
            InvalidRequestError("--all", person or "", "no PERSON, and --out FILE.parquet")
            if person
            else InvalidRequestError("--out", None, "a Parquet file to write every person's recommendations to")
        )
    try:
        with Workspace(_settings(data_dir)) as ws:
            service = Recommendations.open_or_train(ws.engine, ws.pseudonymiser, ws.settings.data_dir / "models")
            if every:
                assert out is not None  # (checked above: --all needs --out)
                summary = service.export_all(out, surface.replace("-", "_"), n=n, store=store)
            else:
                answer = service.recommend(
                    person,
                    surface.replace("-", "_"),
                    n=n,
                    store=store,
                    product=product,
                    basket=basket.split(",") if basket else None,
                )
    except OmnithreadError as error:
        _fail(error)
    if every:
        if as_json:
            _print_json(summary)
        else:
            reasons = ", ".join(f"{k} {v:,}" for k, v in summary["non_personal_by_reason"].items())
            console.print(
                f"{summary['persons']:,} persons ({summary['personal']:,} personal"
                + (f"; non-personal: {reasons}" if reasons else "")
                + f"), {summary['rows']:,} rows -> "
                f"{summary['path']} in {summary['seconds']} s ({summary['persons_per_second']:,} persons/s)"
            )
        return
    if as_json:
        _print_json(answer.as_dict())
        return
    title = f"{answer.surface}" + (f" for {answer.person_id}" if answer.person_id else "")
    console.print(_table(title, answer.items))
    if answer.fallback_reason:
        console.print(f"({answer.fallback_reason})")


@app.command()
def evaluate(
    holdout_days: float = typer.Option(14.0, help="Days at the end of the log held out."),
    truth: Optional[Path] = typer.Option(None, help="A simulated world's truth directory: also run the ablation."),
    chart: Optional[Path] = typer.Option(None, help="Where to save the ablation chart (SVG)."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Every model on the log with a temporal split; with --truth, the ablation of omnithread's claim."""
    from omnithread.recommend.evaluate_log import evaluate_log
    from omnithread.workspace import Workspace

    with Workspace(_settings(data_dir)) as ws:
        result = {"temporal": evaluate_log(ws.engine, holdout_days)}
        if truth is not None:
            from omnithread.recommend.ablation import run_ablation, save_chart

            result["ablation"] = run_ablation(ws.engine, ws.pseudonymiser, truth)
            save_chart(result["ablation"], chart or ws.settings.data_dir / "ablation.svg")
    if as_json:
        _print_json(result)
        return
    _print_evaluation(result["temporal"])
    if "ablation" in result:
        _print_ablation(result["ablation"])


def _print_evaluation(res: dict) -> None:
    if "error" in res:
        console.print(res["error"])
        return
    rows = []
    for name, r in res["models"].items():
        for group in ("online", "store", "all"):
            if group in r:
                g = r[group]
                rows.append(
                    {
                        "model": name,
                        "purchases": group,
                        "users": g["users"],
                        "NDCG@10": g["ndcg@10"],
                        "Rec@20": g["recall@20"],
                        "MAP@10": g["map@10"],
                        "cov@10": g["coverage@10"],
                    }
                )
    console.print(_table(f"Held-out purchases of the last {res['holdout_days']:g} days (temporal split)", rows))


def _print_ablation(res: dict) -> None:
    rows = [
        {
            "trained on": name,
            "online purchases": round(v["online"]["ndcg@10"], 4),
            "store purchases": round(v["store"]["ndcg@10"], 4),
            "all": round(v["all"]["ndcg@10"], 4),
        }
        for name, v in res["variants"].items()
    ]
    console.print(_table("Ablation: NDCG@10 on held-out purchases", rows))
    share = res["captured_share_of_ceiling_gain"]
    reachable = res.get("captured_share_of_reachable_ceiling_gain")
    evidence = res.get("reachable_share_of_ceiling_gain")
    console.print(
        "Share of the ceiling's gain over siloed data that omnithread's identity resolution captures: "
        + (f"{share:.0%}" if share is not None else "n/a (the ceiling does not beat siloed data)")
        + (
            f" ({reachable:.0%} of the reachable ceiling's: every link decided right"
            + (f", which itself holds {evidence:.0%} of the ceiling's gain" if evidence is not None else "")
            + ")"
            if reachable is not None
            else ""
        )
        + (f". Chart: {res['chart']}" if res.get("chart") else "")
    )
    console.print("Simulator assumptions behind this result: " + " ".join(res["assumptions"]))


audience_app = typer.Typer(
    no_args_is_help=True,
    help='Audiences: rules over traits, lifetime value and recent events (clv > 200 and "store" in channels).',
)
app.add_typer(audience_app, name="audience")


@audience_app.command("create")
def audience_create(
    name: str = typer.Argument(..., help="lower-case letters, digits, - or _"),
    rule: str = typer.Option(..., "--rule", help='e.g. events("Product Viewed", 7) >= 3 and orders_in(30) == 0'),
    description: str = typer.Option("", "--description"),
    replace: bool = typer.Option(False, "--replace", help="Change the audience if it exists."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Save an audience and compute its members now; they follow the persons from then on."""
    from omnithread.analytics.audiences import create_audience
    from omnithread.flows import resolve_persons
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            if not ws.engine.has_table("profiles"):
                resolve_persons(ws)
            result = create_audience(ws.engine, name, rule, description, replace)
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(result)
    else:
        changes = result["changes"]
        console.print(
            f"Audience {name}: {result['members']:,} members ({changes['joined']:,} joined, {changes['left']:,} left)."
        )


@audience_app.command("preview")
def audience_preview(
    rule: str = typer.Argument(..., help="The rule to try, without saving it."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """How many persons a rule selects now, and some of them."""
    from omnithread.analytics.audiences import preview
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            result = preview(ws.engine, rule)
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(result)
    else:
        console.print(f"{result['members']:,} persons; for example: {', '.join(result['sample'][:10]) or 'none'}")


@audience_app.command("list")
def audience_list(data_dir: Optional[Path] = DataDir, as_json: bool = JsonFlag) -> None:
    """Every audience with its rule and how many members it has."""
    from omnithread.analytics.audiences import list_audiences
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            rows = list_audiences(ws.engine)
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(rows)
    else:
        console.print(_table("Audiences", rows, ["name", "members", "rule", "description"]))


@audience_app.command("show")
def audience_show(
    name: str,
    limit: int = typer.Option(100, "--limit"),
    offset: int = typer.Option(0, "--offset"),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """One audience and a page of its members."""
    from omnithread.analytics.audiences import audience_members
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            result = audience_members(ws.engine, name, limit, offset)
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(result)
    else:
        console.print(f"{name}: {result['members']:,} members; rule: {result['rule']}")
        console.print(_table("Members", result["page"]))


@audience_app.command("delete")
def audience_delete(name: str, data_dir: Optional[Path] = DataDir) -> None:
    """Delete an audience, its members and its changes."""
    from omnithread.analytics.audiences import delete_audience
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            delete_audience(ws.engine, name)
    except OmnithreadError as error:
        _fail(error)
    console.print(f"Audience {name} deleted.")


@audience_app.command("export")
def audience_export(
    name: str,
    platform: str = typer.Option(..., "--platform", help="google (Customer Match) or meta (Custom Audiences)."),
    out: Path = typer.Option(..., "--out", help="The CSV file to write."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Write an audience as an ad platform's customer list: SHA-256 of each member's normalised email and
    phone, from the contact vault (advertising-consented contacts only; docs/analytics.md)."""
    from omnithread.destinations.exports import export_audience
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            result = export_audience(ws.engine, ws.cipher, name, platform, out)
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(result)
    else:
        console.print(
            f"{result['rows']:,} rows for {result['exported_persons']:,} of {result['members']:,} members written to "
            f"{result['path']} ({result['refused_advertising']:,} refused advertising, "
            f"{result['without_contact']:,} without a consented contact)."
        )


contacts_app = typer.Typer(
    no_args_is_help=True, help="The contact vault: advertising-consented contacts for audience exports."
)
app.add_typer(contacts_app, name="contacts")


@contacts_app.command("import")
def contacts_import(
    path: Path = typer.Argument(..., help="CSV or JSON Lines: user_id, email, phone, advertising_consent."),
    source: str = typer.Option("", "--source", help="Where the list comes from (a CRM export's name)."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Vault the consented contacts of a list as encrypted platform hashes (raw values are never stored);
    a row without consent withdraws any earlier one."""
    import csv as csvlib

    from omnithread.destinations.exports import import_contacts
    from omnithread.workspace import Workspace

    try:
        with path.open(newline="") as handle:
            rows: list[dict] = (
                [json.loads(line) for line in handle if line.strip()]
                if path.suffix.lower() in (".jsonl", ".ndjson", ".json")
                else list(csvlib.DictReader(handle))
            )
    except (OSError, ValueError) as error:
        _fail(InvalidRequestError("path", str(path), f"a readable CSV or JSON Lines file ({error})"))
    try:
        with Workspace(_settings(data_dir)) as ws:
            report = import_contacts(ws.engine, ws.pseudonymiser, ws.cipher, rows, source or path.name)
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(report)
    else:
        console.print(
            f"{report['rows']:,} rows: {report['stored']:,} stored, {report['without_consent']:,} without consent "
            f"({report['withdrawn']:,} withdrawn), {len(report['refused']):,} refused."
        )
        if report["refused"]:
            console.print(_table("Refused rows", report["refused"][:50]))


destinations_app = typer.Typer(
    no_args_is_help=True, help="Webhook destinations for events and audience changes: signed, retried, metered."
)
app.add_typer(destinations_app, name="destinations")


@destinations_app.command("add")
def destinations_add(
    name: str = typer.Argument(..., help="lower-case letters, digits, - or _"),
    url: str = typer.Option(..., "--url"),
    secret_file: Path = typer.Option(..., "--secret-file", help="A file holding the signing secret (16+ chars)."),
    events: str = typer.Option("", "--events", help="Event names, comma-separated, or * for every event."),
    audiences: str = typer.Option("", "--audiences", help="Audiences whose joins and leaves to send."),
    max_attempts: int = typer.Option(8, "--max-attempts"),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds a request may take."),
    from_start: bool = typer.Option(False, "--from-start", help="Also send what the log already holds."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Register a webhook destination (the secret is read from a file, kept out of shell history)."""
    from omnithread.destinations.webhooks import add_destination
    from omnithread.workspace import Workspace

    try:
        secret = secret_file.read_text().strip()
    except OSError as error:
        _fail(InvalidRequestError("secret_file", str(secret_file), f"a readable file ({error.strerror})"))
    split = [e.strip() for e in events.split(",") if e.strip()]
    chosen = [a.strip() for a in audiences.split(",") if a.strip()]
    try:
        with Workspace(_settings(data_dir)) as ws:
            result = add_destination(
                ws.engine, ws.cipher, name, url, secret, split, chosen, max_attempts, timeout, from_start
            )
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(result)
    else:
        console.print(f"Destination {name} added: {url}")


@destinations_app.command("list")
def destinations_list(data_dir: Optional[Path] = DataDir, as_json: bool = JsonFlag) -> None:
    """Destinations with their deliveries: delivered, pending, dead, failed attempts, latency."""
    from omnithread.destinations.webhooks import list_destinations
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            rows = list_destinations(ws.engine)
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(rows)
    else:
        columns = ["name", "url", "delivered", "pending", "dead", "failed_attempts", "latency_p50_ms"]
        console.print(_table("Destinations", rows, columns))


@destinations_app.command("deliver")
def destinations_deliver(
    seconds: float = typer.Option(60.0, "--seconds", help="Give up after this long (retries wait)."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Send what is due now (a running server does this by itself); stops when nothing is pending."""
    from omnithread.destinations.webhooks import Dispatcher
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            dispatcher = Dispatcher(ws.engine, ws.cipher)
            try:
                metrics = dispatcher.run(seconds=seconds)
            finally:
                dispatcher.close()
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(metrics)
    else:
        console.print(_table("Deliveries", list(metrics.values())))


@destinations_app.command("replay")
def destinations_replay(name: Optional[str] = typer.Argument(None), data_dir: Optional[Path] = DataDir) -> None:
    """Dead-lettered deliveries (of one destination, or all) back to pending."""
    from omnithread.destinations.webhooks import replay_dead
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            n = replay_dead(ws.engine, name)
    except OmnithreadError as error:
        _fail(error)
    console.print(f"{n:,} dead-lettered deliveries pending again.")


@destinations_app.command("remove")
def destinations_remove(name: str, data_dir: Optional[Path] = DataDir) -> None:
    """Remove a destination and its outbox."""
    from omnithread.destinations.webhooks import remove_destination
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            remove_destination(ws.engine, name)
    except OmnithreadError as error:
        _fail(error)
    console.print(f"Destination {name} removed.")


keys_app = typer.Typer(no_args_is_help=True, help="API keys: create (shown once), list, revoke.")
app.add_typer(keys_app, name="keys")


def _key_store(data_dir: Optional[Path]):
    from omnithread.api.keys import KeyStore
    from omnithread.privacy.secret import load_secret

    settings = _settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return KeyStore(settings.data_dir, load_secret(settings.data_dir))


@keys_app.command("create")
def keys_create(
    role: str = typer.Option(..., help="write (send events), read (read API) or admin (keys, consent, erasure)."),
    name: Optional[str] = typer.Option(None, help="What the key is for."),
    rate: Optional[float] = typer.Option(None, help="Requests a second allowed (default by role)."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Create a key; it is printed once and only its keyed hash is stored."""
    store = _key_store(data_dir)
    try:
        key, record = store.create(role, name, rate)
    except OmnithreadError as error:
        _fail(error)
    finally:
        store.audit(None, "create key", None, "cli")
        store.close()
    if as_json:
        _print_json({"key": key, **record.as_dict()})
    else:
        console.print(f"{key}\n(key id {record.key_id}, role {record.role}; shown once, store it now)")


@keys_app.command("list")
def keys_list(data_dir: Optional[Path] = DataDir, as_json: bool = JsonFlag) -> None:
    """Every key's id, role, rate and state (never the key itself)."""
    store = _key_store(data_dir)
    keys = [k.as_dict() for k in store.list()]
    store.close()
    if as_json:
        _print_json(keys)
    else:
        console.print(_table("API keys", keys))


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: Optional[Path] = DataDir, as_json: bool = JsonFlag) -> None:
    """Revoke a key by its id; it stops working within a second, also in a running server."""
    store = _key_store(data_dir)
    try:
        record = store.revoke(key_id)
        store.audit(None, "revoke key", key_id, "cli")
    except OmnithreadError as error:
        _fail(error)
    finally:
        store.close()
    if as_json:
        _print_json(record.as_dict())
    else:
        console.print(f"revoked {record.key_id} ({record.role}) at {record.revoked_at}")


def _audit(data_dir: Optional[Path], action: str, target: str | None, outcome: str) -> None:
    store = _key_store(data_dir)
    try:
        store.audit(None, action, target, outcome)
    finally:
        store.close()


@app.command()
def erase(
    person: str = typer.Argument(..., help="Person id or any identifier (account, device, email, phone, card)."),
    mode: str = typer.Option("suppress_and_delete", help="suppress, delete or suppress_and_delete."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Erase a person: delete their data everywhere and/or refuse their future events."""
    from omnithread.flows import erase as do_erase
    from omnithread.workspace import Workspace

    try:
        with Workspace(_settings(data_dir)) as ws:
            try:
                report = do_erase(ws, person, mode, raw_values=(person,))
            except OmnithreadError as error:
                target = ws.pseudonymiser.fingerprint(f"erasure:{person}".encode())
                _audit(data_dir, f"erasure {mode}", target, f"failed (cli): {type(error).__name__}")
                raise
        _audit(data_dir, f"erasure {mode}", report.request_id, "cli")
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(report.as_dict())
    else:
        console.print(
            _table(
                f"Erasure ({mode}), request {report.request_id}",
                [{k: v for k, v in report.as_dict().items() if k not in ("notes", "mode", "request_id")}],
            )
        )
        for note in report.notes:
            console.print(note)


@app.command()
def consent(
    person: str = typer.Argument(..., help="Person id or any identifier."),
    purpose: list[str] = typer.Option(..., "--set", help="purpose=true|false (analytics, personalisation, biometric)."),
    source: str = typer.Option("cli", help="Where the answer was given."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """Record a person's consent per purpose (with its source and time)."""
    from omnithread.flows import record_consent
    from omnithread.workspace import Workspace

    purposes = {}
    for item in purpose:
        name, _, value = item.partition("=")
        if value.lower() not in ("true", "false"):
            _fail(InvalidRequestError("--set", item, "purpose=true or purpose=false"))
        purposes[name] = value.lower() == "true"
    try:
        with Workspace(_settings(data_dir)) as ws:
            result = record_consent(ws, person, purposes, source)
    except OmnithreadError as error:
        _fail(error)
    if as_json:
        _print_json(result)
    else:
        console.print(f"consent for {result['person_id']}: {result['purposes']} (source {source})")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    config: Optional[Path] = typer.Option(
        None, "--config", help="A settings file (TOML; docs/omnithread.example.toml lists every setting)."
    ),
    role: str = typer.Option(
        "all",
        help="all: the whole service over the data directory (and the loader of the broker, if one is set); "
        "collector: a collector process of its own, appending to the broker (any number may run).",
    ),
    broker: Optional[str] = typer.Option(
        None, help="A Redis address (redis://127.0.0.1:6379/0) between collectors and the log (else OMNITHREAD_BROKER)."
    ),
    data_dir: Optional[Path] = DataDir,
) -> None:
    """Run omnithread as a service: the collector, the read API and the dashboard, and the thread by itself
    (persons kept current, the model retrained, the drop folder imported, commands run as jobs). With
    ``--role collector`` and a broker: only the collector, in a process that opens no engine (docs/scale.md)."""
    import os
    import secrets
    from functools import partial

    from omnithread.api.app import create_app
    from omnithread.api.server import serve as serve_app
    from omnithread.cli.forward import SERVER_FILE, running_server, write_server_file
    from omnithread.cli.inprocess import capture_streams, run_command

    if config is not None:  # for the server and the commands it runs as jobs
        os.environ["OMNITHREAD_CONFIG"] = str(config.resolve())
    settings = _settings(data_dir)
    if broker:
        try:
            settings = settings.with_(broker=broker)
        except OmnithreadError as error:
            _fail(error)
    if role == "collector":
        try:
            collector = create_app(settings, role="collector")
        except OmnithreadError as error:
            _fail(error)
        err.print(f"omnithread collector on http://{host}:{port}, appending to the broker of {settings.data_dir}")
        gc.collect()
        gc.freeze()
        serve_app(collector, host, port, settings.request_timeout)
        return
    if role != "all":
        _fail(ConfigError("role", role, "all or collector"))
    other = running_server(settings.data_dir.resolve())
    if other is not None:
        _fail(
            ConflictError(
                f"a server already runs on {settings.data_dir} (process {other['pid']}, {other['url']})",
                "stop it first, or serve another data directory",
            )
        )
    token = secrets.token_urlsafe(32)
    capture_streams()
    server_file = settings.data_dir / SERVER_FILE
    application = create_app(
        settings, partial(run_command, app, _report_error), token, lambda: server_file.unlink(missing_ok=True)
    )
    write_server_file(settings.data_dir, f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}", token)
    if not application.state.service.keys.list():
        err.print("No API keys yet: create them with `omnithread keys create --role write` (and read, admin).")
    err.print(f"omnithread serving {settings.data_dir} on http://{host}:{port} (OpenAPI: /docs, /openapi.json)")
    # Everything loaded so far (modules, the app, the key store) lives as long as the process: frozen out
    # of the garbage collector, whose full passes over it were the slowest 1% of collector answers
    # (p99 103 ms -> 58 ms at 20,000 events/s).
    gc.collect()
    gc.freeze()
    try:
        serve_app(application, host, port, settings.request_timeout)
    finally:
        server_file.unlink(missing_ok=True)  # (also removed as the app stops: a stopping signal ends here first)


@app.command()
def jobs(
    job_id: Optional[str] = typer.Argument(None, help="Show this job whole, with what it printed."),
    state: Optional[str] = typer.Option(None, help="Only jobs in these states (queued,running,done,failed)."),
    limit: int = typer.Option(30, help="How many of the newest jobs."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = JsonFlag,
) -> None:
    """The jobs of the server on the data directory: running, queued, done and failed (works with the server
    running or not)."""
    from omnithread.api.jobs import JOB_STATES, JobStore
    from omnithread.privacy import PayloadCipher, Pseudonymiser, load_secret
    from omnithread.privacy.payload import personal_data_rule

    states = tuple(state.split(",")) if state else JOB_STATES
    if not set(states) <= set(JOB_STATES):
        _fail(InvalidRequestError("--state", state, f"states among {', '.join(JOB_STATES)}"))
    settings = _settings(data_dir)
    secret = load_secret(settings.data_dir)
    cipher = PayloadCipher(secret)
    rule = personal_data_rule(Pseudonymiser(secret, settings.phone_region, settings.ip_mode), cipher)
    store = JobStore(settings.data_dir, cipher, rule.text)
    try:
        if job_id:
            job = store.get(job_id)
            if as_json:
                _print_json(job.as_dict())
                return
            console.print(
                f"{job.job_id} {job.kind} ({job.origin}): {job.state}, exit {job.exit_code}, {job.seconds} s",
                highlight=False,
            )
            sys.stdout.write((job.stdout or "") + (job.stderr or "") + (job.error or ""))
            return
        found = store.list(states, limit)
    except OmnithreadError as error:
        _fail(error)
    finally:
        store.close()
    if as_json:
        _print_json({"jobs": [job.as_dict(output=False) for job in found]})
        return
    rows = [
        {
            "job": j.job_id,
            "kind": j.kind,
            "origin": j.origin,
            "state": j.state,
            "progress": j.progress or "",
            "created": j.created_at[:19],
            "seconds": j.seconds,
            "exit": j.exit_code,
        }
        for j in found
    ]
    console.print(_table("Jobs (newest first)", rows) if rows else "No jobs.")


def _report_error(error: BaseException) -> int | None:
    """Say an error of omnithread's or of the data directory's files in one line; its exit code (None for
    any other error, which is a bug to show whole)."""
    if isinstance(error, OmnithreadError):
        err.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        return 2
    if isinstance(error, OSError):
        err.print(
            f"[red]error:[/red] {error.strerror or error}: {error.filename or ''}", highlight=False, soft_wrap=True
        )
        return 2
    return None


def _engine_option(argv: list[str]) -> list[str]:
    """``--engine NAME`` (or ``--engine=NAME``), accepted on every command: the engine the command runs on, as
    ``OMNITHREAD_ENGINE`` names it (``duckdb``, ``spark``); the words without it."""
    rest, engine, words = [], None, iter(argv)
    for word in words:
        if word == "--engine":
            engine = next(words, None)
            if engine is None:
                raise SystemExit(
                    _report_error(ConfigError("engine", "", "an engine name after --engine (duckdb, spark)"))
                )
        elif word.startswith("--engine="):
            engine = word.split("=", 1)[1]
        else:
            rest.append(word)
    if engine is not None:
        os.environ["OMNITHREAD_ENGINE"] = engine
    return rest


def main() -> None:
    """The console script: every command, with any error of omnithread's or of the data directory's files
    (read-only, missing) said in one line instead of a traceback. While a server runs on the command's data
    directory, the command is handed to it (``omnithread.cli.forward``) and runs there."""
    from omnithread.cli.forward import forward
    from omnithread.cli.inprocess import command_of, has_data_dir

    argv = _engine_option(sys.argv[1:])
    sys.argv[1:] = argv
    try:
        names, command = command_of(app, argv)
        if command is not None and has_data_dir(command):
            code = forward(names, command, argv, console.width)
            if code is not None:
                raise SystemExit(code)
        app()
    except (OmnithreadError, OSError) as error:
        raise SystemExit(_report_error(error)) from None


if __name__ == "__main__":  # pragma: no cover
    main()
