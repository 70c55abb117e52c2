"""Lifetime value per person, from the log through the identity map: summaries by SQL, fits in Python.

Each person's orders are summarised by the engine (set-based, on any engine) as the models need them, by
day: a day with orders is one purchase; ``frequency`` counts the days after the first, ``recency`` is the
days from the first to the last, ``T`` the days from the first to the end of observation, and ``monetary``
the mean value of the repeat days. Only those summaries (one row per person) reach Python, where BG/NBD and
Gamma-Gamma are fitted (``clv``): their cost follows persons, and people with equal summaries are fitted
once, so a million persons take seconds.

Three fits: all orders joined through the identity map (one person, every channel), online orders only
(web, app, voice) and store orders only; their values go to the ``lifetime_values`` table and into the
profiles. A person who refused the ``analytics`` purpose is neither fitted nor scored.

``validate_lifetime`` holds out the last days of the log: it fits on the days before, predicts each
person's purchases in the held-out days and compares them with what the log shows, beside a naive
forecast (each person's own past rate).
"""

from __future__ import annotations

import time as clock
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from omnithread.analytics import ORDER_VALUE_SQL, clv
from omnithread.engine.base import Engine
from omnithread.errors import InvalidRequestError
from omnithread.profile import profile_columns

__all__ = [
    "attach_lifetime_values",
    "forget_lifetime",
    "CHANNEL_GROUPS",
    "LifetimeReport",
    "purchase_summary",
    "score_lifetime_value",
    "validate_lifetime",
]

# the channel groups fitted apart, and all of them joined
CHANNEL_GROUPS: dict[str, tuple[str, ...] | None] = {
    "joined": None,
    "online": ("web", "app", "voice"),
    "store": ("store",),
}
EXPECTED_DAYS = 90  # the horizon of the expected purchases written to profiles


def _orders_sql(channels: tuple[str, ...] | None, until: datetime | None) -> str:
    where = ["event = 'Order Completed'", "person_id IS NOT NULL"]
    if channels:
        where.append("channel IN (" + ", ".join(f"'{c}'" for c in channels) + ")")
    if until is not None:
        where.append(f"event_at < TIMESTAMPTZ '{until.isoformat()}'")
    return f"""
        SELECT person_id, CAST(event_at AS DATE) AS day, {ORDER_VALUE_SQL} AS value
        FROM event_persons
        WHERE {" AND ".join(where)}
          AND person_id NOT IN (SELECT person_id FROM profiles WHERE consent_analytics = false)"""


def purchase_summary(
    engine: Engine, *, channels: tuple[str, ...] | None = None, until: datetime | None = None, as_of=None
) -> dict[str, np.ndarray]:
    """Per person with an order (before ``until``, in ``channels``): frequency, recency and T in days, and
    monetary (the mean value of the repeat days). ``as_of`` (a date) ends the observation: by default the day
    of the last order in the log before ``until`` (not of the last event: a device whose clock runs ahead
    would stretch every T)."""
    if as_of is None:
        bound = f" AND event_at < TIMESTAMPTZ '{until.isoformat()}'" if until is not None else ""
        as_of = engine.scalar(f"SELECT CAST(max(event_at) AS DATE) FROM events WHERE event = 'Order Completed'{bound}")
    if as_of is None:
        return {k: np.array([]) for k in ("person_id", "frequency", "recency", "T", "monetary")}
    rows = engine.query(f"""
        WITH days AS (
            SELECT person_id, day, sum(value) AS value FROM ({_orders_sql(channels, until)}) GROUP BY 1, 2
        ), firsts AS (
            SELECT person_id, min(day) AS first_day, max(day) AS last_day, count(*) - 1 AS frequency
            FROM days GROUP BY 1
        )
        SELECT f.person_id, f.frequency, date_diff('day', f.first_day, f.last_day) AS recency,
               date_diff('day', f.first_day, DATE '{as_of.isoformat()}') AS t,
               round(coalesce(avg(CASE WHEN d.day > f.first_day THEN d.value END), 0), 6) AS monetary
        FROM firsts f JOIN days d ON d.person_id = f.person_id
        GROUP BY f.person_id, f.frequency, f.first_day, f.last_day
        ORDER BY f.person_id""")
    out = {
        "person_id": np.array(rows.column("person_id").to_pylist(), dtype=object),
        "frequency": np.asarray(rows.column("frequency").to_numpy(zero_copy_only=False), dtype=float),
        "recency": np.asarray(rows.column("recency").to_numpy(zero_copy_only=False), dtype=float),
        "T": np.asarray(rows.column("t").to_numpy(zero_copy_only=False), dtype=float),
        "monetary": np.asarray(rows.column("monetary").to_numpy(zero_copy_only=False), dtype=float),
    }
    return out


@dataclass
class LifetimeReport:
    """What a scoring fitted and wrote: per channel group, the parameters and how many persons."""

    persons: int = 0
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)
    horizon_days: int = 365
    annual_discount: float = 0.10
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _fit(summary: dict[str, np.ndarray]) -> dict[str, Any]:
    """BG/NBD and Gamma-Gamma on one summary; a group without enough repeat buyers is reported, not fitted."""
    people = len(summary["frequency"])
    repeat = int((summary["frequency"] > 0).sum())
    fit: dict[str, Any] = {"persons": people, "repeat_buyers": repeat}
    if people < 10 or repeat < 3:
        fit["skipped"] = f"{people} persons with orders, {repeat} with a repeat purchase: too few to fit"
        return fit
    try:
        fit["bgnbd"] = clv.fit_bgnbd(summary["frequency"], summary["recency"], summary["T"])
        fit["gamma_gamma"] = clv.fit_gamma_gamma(summary["frequency"], summary["monetary"])
        if fit["gamma_gamma"]["q"] <= 1:
            raise clv.FitError(f"Gamma-Gamma's q = {fit['gamma_gamma']['q']:.3g}: mean spend not finite")
    except clv.FitError as error:
        fit.pop("bgnbd", None)
        fit.pop("gamma_gamma", None)
        fit["skipped"] = str(error)
    return fit


def _values(fit: dict, summary: dict, horizon: float, discount: float) -> dict[str, np.ndarray] | None:
    if "bgnbd" not in fit:
        return None
    args = (summary["frequency"], summary["recency"], summary["T"])
    return {
        "p_alive": clv.probability_alive(fit["bgnbd"], *args),
        "expected_orders": clv.expected_purchases(fit["bgnbd"], EXPECTED_DAYS, *args),
        "expected_order_value": clv.expected_spend(fit["gamma_gamma"], summary["frequency"], summary["monetary"]),
        "clv": clv.lifetime_value(
            fit["bgnbd"], fit["gamma_gamma"], *args, summary["monetary"], horizon=horizon, annual_discount=discount
        ),
    }


def score_lifetime_value(engine: Engine, *, horizon_days: int = 365, annual_discount: float = 0.10) -> LifetimeReport:
    """Fit the three groups' models, write ``lifetime_values`` (one row per person with an order) and add
    their columns to ``profiles``. Needs profiles (``resolve`` builds them)."""
    if horizon_days < 1:
        raise InvalidRequestError("horizon_days", horizon_days, "at least 1")
    if not 0 <= annual_discount < 1:
        raise InvalidRequestError("annual_discount", annual_discount, "a rate between 0 and 1")
    started = clock.perf_counter()
    report = LifetimeReport(horizon_days=horizon_days, annual_discount=annual_discount)
    columns: dict[str, Any] = {}
    persons: np.ndarray | None = None
    for group, channels in CHANNEL_GROUPS.items():
        summary = purchase_summary(engine, channels=channels)
        fit = _fit(summary)
        report.fits[group] = fit
        values = _values(fit, summary, horizon_days, annual_discount)
        if group == "joined":
            persons = summary["person_id"]
            columns = {
                "frequency": summary["frequency"].astype(np.int64),
                "recency_days_first_to_last": summary["recency"].astype(np.int64),
                "tenure_days": summary["T"].astype(np.int64),
                "mean_repeat_value": summary["monetary"],
            }
            for name in ("p_alive", "expected_orders", "expected_order_value", "clv"):
                columns[name] = values[name] if values else np.full(len(persons), np.nan)
        else:
            assert persons is not None
            mine = np.full(len(persons), np.nan)
            if values is not None:
                where = {p: i for i, p in enumerate(summary["person_id"])}
                index = np.array([where.get(p, -1) for p in persons], dtype=np.int64)
                found = index >= 0
                mine[found] = values["clv"][index[found]]
                # a person with orders only in the other group: no value expected from this one
                mine[~found] = 0.0
            columns[f"clv_{group}"] = mine
    assert persons is not None
    table = pa.table(
        {"person_id": pa.array(list(persons), pa.string())}
        | {k: pa.array(np.where(np.isnan(v), None, v) if v.dtype.kind == "f" else v) for k, v in columns.items()}
    )
    report.persons = len(persons)
    _write(engine, table)
    _write_models(engine, report)
    report.seconds = round(clock.perf_counter() - started, 3)
    return report


LIFETIME_COLUMNS = (
    "p_alive", "expected_orders", "expected_order_value", "clv", "clv_online", "clv_store",
)  # fmt: skip


def _write(engine: Engine, table: pa.Table) -> None:
    engine.register("_lifetime_values", table)
    try:
        engine.execute("CREATE OR REPLACE TABLE lifetime_values AS SELECT * FROM _lifetime_values")
    finally:
        engine.unregister("_lifetime_values")
    attach_lifetime_values(engine)


def _write_models(engine: Engine, report: LifetimeReport) -> None:
    """The fitted parameters per group (``lifetime_models``): what the report and the API show."""
    names = ("r", "alpha", "a", "b", "p", "q", "v")
    rows = []
    for group, fit in report.fits.items():
        params = {**fit.get("bgnbd", {}), **fit.get("gamma_gamma", {})}
        rows.append(
            {"channel_group": group, "persons": fit["persons"], "repeat_buyers": fit["repeat_buyers"]}
            | {k: params.get(k) for k in names}
            | {"skipped": fit.get("skipped"), "horizon_days": report.horizon_days}
            | {"annual_discount": report.annual_discount}
        )
    table = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [("channel_group", pa.string()), ("persons", pa.int64()), ("repeat_buyers", pa.int64())]
            + [(k, pa.float64()) for k in names]
            + [("skipped", pa.string()), ("horizon_days", pa.int64()), ("annual_discount", pa.float64())]
        ),
    )
    engine.register("_lifetime_models", table)
    try:
        engine.execute("CREATE OR REPLACE TABLE lifetime_models AS SELECT * FROM _lifetime_models")
    finally:
        engine.unregister("_lifetime_models")


def forget_lifetime(engine: Engine, person_ids: set[str]) -> int:
    """An erased person's lifetime values; how many rows went."""
    if not person_ids:
        return 0
    ids = sorted(person_ids)
    return engine.delete_where("lifetime_values", "person_id IN (" + ", ".join("?" * len(ids)) + ")", ids)


def attach_lifetime_values(engine: Engine) -> bool:
    """Add the last scoring's columns to ``profiles`` (rebuilt profiles lose them): False when there is no
    scoring yet or no profiles. Persons new since the scoring get NULLs until the next."""
    if not engine.has_table("lifetime_values") or not engine.has_table("profiles"):
        return False
    # the columns of the last scoring replace any earlier ones
    kept = [c for c in profile_columns(engine) if c not in LIFETIME_COLUMNS]
    chosen = ", ".join(f"p.{c}" for c in kept)
    added = ", ".join(f"v.{c}" for c in LIFETIME_COLUMNS)
    engine.execute(f"""
        CREATE OR REPLACE TABLE profiles AS
        SELECT {chosen}, {added} FROM profiles p LEFT JOIN lifetime_values v ON v.person_id = p.person_id""")
    return True


# -- validation ---------------------------------------------------------------------------------------------
def validate_lifetime(engine: Engine, holdout_days: int = 30, *, channels: tuple[str, ...] | None = None) -> dict:
    """Fit on the log before its last ``holdout_days`` days (counted back from its last order), predict each
    calibration buyer's purchase days in the holdout, and compare with the log: totals, per-person errors,
    and the same for a naive forecast (each person's own rate so far), and predicted against actual by
    calibration frequency."""
    if holdout_days < 1:
        raise InvalidRequestError("holdout_days", holdout_days, "at least 1")
    last = engine.scalar("SELECT max(event_at) FROM events WHERE event = 'Order Completed'")
    if last is None:
        raise InvalidRequestError("events", 0, "an event log with orders to validate on")
    last_day = last.date() if hasattr(last, "date") else last
    cutoff_day = last_day - timedelta(days=holdout_days - 1)
    cutoff = datetime.combine(cutoff_day, datetime.min.time()).replace(tzinfo=last.tzinfo)
    calibration = purchase_summary(engine, channels=channels, until=cutoff, as_of=cutoff_day - timedelta(days=1))
    fit = _fit(calibration)
    if "bgnbd" not in fit:
        raise clv.FitError(f"the calibration period cannot be fitted: {fit['skipped']}")
    actual_rows = engine.rows(f"""
        SELECT person_id, count(DISTINCT day) AS days FROM ({_orders_sql(channels, None)})
        WHERE day >= DATE '{cutoff_day.isoformat()}' GROUP BY 1""")
    actual_by = {r["person_id"]: r["days"] for r in actual_rows}
    actual = np.array([actual_by.get(p, 0) for p in calibration["person_id"]], dtype=float)
    args = (calibration["frequency"], calibration["recency"], calibration["T"])
    predicted = clv.expected_purchases(fit["bgnbd"], holdout_days, *args)
    # the naive forecast: the person's purchase days so far per day observed, carried on
    naive = (calibration["frequency"] + 1) / (calibration["T"] + 1) * holdout_days
    by_frequency = []
    for low, high in ((0, 1), (1, 2), (2, 3), (3, 4), (4, 6), (6, 10**9)):
        group = (args[0] >= low) & (args[0] < high)
        if group.any():
            by_frequency.append(
                {
                    "frequency": f"{low}" if high == low + 1 else (f"{low}+" if high > 10**8 else f"{low}-{high - 1}"),
                    "persons": int(group.sum()),
                    "actual": round(float(actual[group].mean()), 4),
                    "predicted": round(float(predicted[group].mean()), 4),
                    "naive": round(float(naive[group].mean()), 4),
                }
            )

    def errors(forecast: np.ndarray) -> dict:
        return {
            "total": round(float(forecast.sum()), 2),
            "total_error_pct": round(100 * float(forecast.sum() - actual.sum()) / max(actual.sum(), 1), 2),
            "mae": round(float(np.abs(forecast - actual).mean()), 4),
            "rmse": round(float(np.sqrt(((forecast - actual) ** 2).mean())), 4),
            "correlation": round(float(np.corrcoef(forecast, actual)[0, 1]), 4) if actual.std() > 0 else None,
        }

    return {
        "holdout_days": holdout_days,
        "calibration_until": cutoff_day.isoformat(),
        "persons": len(actual),
        "channels": list(channels) if channels else "joined",
        "bgnbd": {k: round(v, 6) for k, v in fit["bgnbd"].items()},
        "actual_total": int(actual.sum()),
        "bgnbd_forecast": errors(predicted),
        "naive_forecast": errors(naive),
        "by_frequency": by_frequency,
    }
