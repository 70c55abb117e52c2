"""Work that spans stages, in one place above them: the CLI, the API and the demo all call these.

Each stage owns its tables and changes them through its own functions; a flow only says in which order.

* :func:`refresh_persons`: fold the events that arrived since the last resolution into persons (the first
  time, resolve the whole log), and rebuild the profiles when anything changed. Every read of a person does
  this first.
* :func:`resolve_persons`, :func:`update_persons`: a full or an incremental resolution, then the profiles.
* :func:`record_consent`: a person's answer per purpose, stored as a ``Consent Updated`` event, then the
  persons, the profiles and the suppression list brought up to it.
* :func:`erase`: an erasure request carried out all or nothing across the log, the identity graph, the
  profiles, the recommendation model and the database file.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omnithread.analytics import ANALYTICS_VIEWS, baskets, cohorts, journeys, stores
from omnithread.analytics.audiences import forget_members, refresh_audiences
from omnithread.analytics.clv import FitError
from omnithread.analytics.lifetime import (
    LifetimeReport,
    attach_lifetime_values,
    forget_lifetime,
    score_lifetime_value,
    validate_lifetime,
)
from omnithread.analytics.report import gather, render
from omnithread.destinations.exports import forget_contacts
from omnithread.destinations.webhooks import destination_metrics
from omnithread.errors import (
    ConflictError,
    ErasureFailedError,
    InvalidEventError,
    InvalidRequestError,
    NotFoundError,
    NothingToTrainError,
    Problem,
    UnavailableError,
)
from omnithread.events.schema import CONSENT_PURPOSES
from omnithread.identity import (
    ResolveReport,
    UpdateReport,
    find_person,
    forget_persons,
    own_identifiers,
    resolve_identities,
    update_identities,
)
from omnithread.privacy.erasure import ErasureReport, check_request, delete_events_naming
from omnithread.profile import build_profiles as _build_profiles
from omnithread.recommend.interactions import forget_interactions
from omnithread.recommend.service import Recommendations, ServingConfig
from omnithread.workspace import Workspace

__all__ = [
    "refresh_persons",
    "resolve_persons",
    "update_persons",
    "record_consent",
    "erase",
    "train_model",
    "current_serving",
    "build_profiles",
    "score_lifetime",
    "write_report",
    "analytics_view",
]


def build_profiles(engine) -> int:
    """Rebuild the profiles from the log and the identity map, with the last lifetime-value scoring's columns."""
    count = _build_profiles(engine)
    attach_lifetime_values(engine)
    refresh_audiences(engine)  # membership follows the persons as events arrive
    return count


def write_report(ws: Workspace, path: Path, *, days: int = 14, holdout_days: int | None = None) -> tuple[Path, dict]:
    """Write the analytics report (one self-contained HTML file) to ``path``: persons resolved and lifetime
    value scored first when they are not yet; with ``holdout_days``, lifetime value validated too. Returns the
    path and the figures shown."""
    if not ws.engine.has_table("profiles"):
        resolve_persons(ws)
    if not ws.engine.has_table("lifetime_models"):
        score_lifetime(ws)
    validation = None
    if holdout_days:
        try:
            validation = validate_lifetime(ws.engine, holdout_days)
        except FitError as error:  # too short a log, too few buyers: the report says so and goes on
            validation = {"holdout_days": holdout_days, "skipped": str(error)}
    data = gather(ws.engine, days, validation)
    data["destinations"] = destination_metrics(ws.engine)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(data), encoding="utf-8")
    return path, data


def analytics_view(ws: Workspace, view: str, *, store: str | None = None, days: int = 14, compute: bool = True) -> Any:
    """One view of the understand stage by name (the CLI's and the API's): rows, or a dict for journeys and
    lifetime. Views over persons resolve first, and lifetime is scored first, when they are not yet (with
    ``compute``; without it, as the read API asks, a missing one is a clear conflict, 409)."""
    if view not in ANALYTICS_VIEWS:
        raise InvalidRequestError("view", view, "one of " + ", ".join(ANALYTICS_VIEWS))
    engine = ws.engine
    if view in ("cohorts", "rfm", "lifetime") and not engine.has_table("profiles"):
        if not compute:
            raise ConflictError("persons are not resolved yet", "run omnithread resolve")
        resolve_persons(ws)
    if view == "stores":
        return stores.store_performance(engine)
    if view == "hourly":
        return stores.hourly_traffic(engine, store)
    if view in ("shelves", "plates"):
        return stores.shelf_performance(engine, "product" if view == "shelves" else "plate", store)
    if view == "journeys":
        return journeys.journeys(engine, days)
    if view == "revenue":
        return cohorts.revenue_by_month(engine)
    if view == "cohorts":
        return cohorts.cohorts(engine)
    if view == "rfm":
        return cohorts.rfm_segments(engine)
    if view.startswith("rules_by_"):
        return baskets.association_rules(engine, by=view.removeprefix("rules_by_"), limit=25)
    if not engine.has_table("lifetime_models"):
        if not compute:
            raise ConflictError("lifetime value is not scored yet", "run omnithread clv")
        score_lifetime(ws)
    return {
        "models": engine.rows("SELECT * FROM lifetime_models ORDER BY channel_group"),
        "top": engine.rows("SELECT * FROM lifetime_values WHERE clv IS NOT NULL ORDER BY clv DESC, person_id LIMIT 20"),
    }


def score_lifetime(ws: Workspace, *, horizon_days: int = 365, annual_discount: float = 0.10) -> LifetimeReport:
    """Fit lifetime value (joined, online, store) and write it to ``lifetime_values`` and the profiles; resolves
    first when there are no profiles yet."""
    if not ws.engine.has_table("profiles"):
        resolve_persons(ws)
    return score_lifetime_value(ws.engine, horizon_days=horizon_days, annual_discount=annual_discount)


def refresh_persons(ws: Workspace) -> bool:
    """Bring persons and profiles up to the log; True when anything changed."""
    if not ws.engine.has_table("identity_state"):
        resolve_identities(ws.engine, ws.pseudonymiser)  # also on an empty log: empty tables, clear 404s
        build_profiles(ws.engine)
        return True
    if update_identities(ws.engine, ws.pseudonymiser).events:
        build_profiles(ws.engine)
        return True
    return False


def resolve_persons(ws: Workspace) -> tuple[ResolveReport, int]:
    """Resolve the whole log into persons, then rebuild the profiles; (the report, how many profiles)."""
    report = resolve_identities(ws.engine, ws.pseudonymiser)
    return report, build_profiles(ws.engine)


def update_persons(ws: Workspace) -> UpdateReport:
    """Fold the events loaded since the last resolution into persons, then rebuild the profiles."""
    report = update_identities(ws.engine, ws.pseudonymiser)
    build_profiles(ws.engine)
    return report


# -- consent ------------------------------------------------------------------------------------------------


def record_consent(ws: Workspace, key: str, purposes: dict, source: str) -> dict:
    """Store the answer for the person found by ``key`` as a ``Consent Updated`` event (with its source and
    time) and bring persons, profiles and the suppression list up to it; returns the person and what was stored.

    Purposes: ``analytics``, ``personalisation``, ``biometric``; the latest answer per purpose wins (profiles
    read it). A person without personalisation consent gets only non-personal recommendations; a person without
    biometric consent has their palm tokens refused at the door."""
    if not isinstance(purposes, dict) or not purposes:
        raise InvalidRequestError(
            "purposes", purposes, f"an object of purpose -> true/false ({', '.join(CONSENT_PURPOSES)})"
        )
    unknown = sorted(set(purposes) - set(CONSENT_PURPOSES))
    if unknown or not all(isinstance(v, bool) for v in purposes.values()):
        raise InvalidRequestError(
            "purposes", purposes, f"purposes among {', '.join(CONSENT_PURPOSES)}, each true or false"
        )
    if not isinstance(key, str) or not key.strip():
        raise InvalidRequestError("person", key, "the person id or one of their identifiers")
    engine = ws.engine
    if not engine.has_table("identity_map"):
        resolve_identities(engine, ws.pseudonymiser)
    person = find_person(engine, key, ws.pseudonymiser)
    anchor = engine.rows(
        """SELECT identifier FROM identity_map WHERE person_id = ? AND (identifier LIKE 'account:%'
           OR identifier LIKE 'device:%') ORDER BY identifier LIKE 'account:%' DESC, identifier LIMIT 1""",
        [person],
    )
    if not anchor:
        raise InvalidRequestError("person", person, "a person with an account or a device to record consent against")
    kind, value = anchor[0]["identifier"].split(":", 1)
    now = datetime.now(UTC)
    event = {
        "type": "track",
        "event": "Consent Updated",
        "messageId": f"consent-{person}-{now.timestamp():.6f}",
        "timestamp": now.isoformat(),
        "context": {"channel": "server"},
        "properties": {"purposes": purposes, "source": source},
        **({"userId": value} if kind == "account" else {"anonymousId": value}),
    }
    ingestor = ws.ingestor(received_at=now)
    ingestor.begin(f"consent:{source}")
    ingestor.submit_payload(event, f"consent:{source}")
    ingestor.flush()
    if ingestor.report.accepted != 1:
        raise InvalidEventError(
            [Problem("consent_not_stored", "purposes", str(purposes), "the consent event was not stored")]
        )
    update_persons(ws)
    ws.log.reload_suppression()
    return {"person_id": person, "purposes": purposes, "source": source, "recorded_at": now.isoformat()}


# -- erasure ------------------------------------------------------------------------------------------------


# one training at a time in a process (a server's scheduled job and a request that finds no model)
training_lock = threading.RLock()


def erase(
    ws: Workspace, key: str, mode: str = "suppress_and_delete", raw_values: tuple[str, ...] = ()
) -> ErasureReport:
    """Carry out an erasure request for the person found by ``key`` (person id or any identifier).

    All or nothing: the identifiers seen since the last resolution are folded in first (so a device or
    phone first seen a minute ago is the person's too), then every table changes in one transaction and
    a retrained model replaces the old one only once that transaction has committed. If any step fails,
    nothing has changed and :class:`ErasureFailedError` says which step. After a delete the database file
    is rewritten, so the erased rows' bytes do not stay in its free space. ``raw_values`` are raw forms the
    requester gave (an email, a phone) to look for in encrypted rejected payloads, which hold unparseable
    input that was never pseudonymised field by field."""
    if not ws.engine.has_transactions:
        raise UnavailableError(
            f"an erasure changes every table at once, and the {ws.engine.name} engine has no transactions: "
            "erase on the DuckDB engine (the server's), then build the batch tables again"
        )
    with training_lock:  # no training runs beside it, to swap in a model that still holds the person
        return _erase(ws, *check_request(key, mode, raw_values))


def _erase(ws: Workspace, key: str, mode: str, raw_values: tuple[str, ...]) -> ErasureReport:
    models = ws.settings.data_dir / "models"
    staging = models.with_name("models.erasure")
    shutil.rmtree(staging, ignore_errors=True)
    step = "finding the person"
    try:
        with ws.engine.transaction():
            refresh_identities(ws)
            report = _erase_in_transaction(ws, key, mode, raw_values)
            if mode in ("delete", "suppress_and_delete") and (models / "index.json").is_file():
                step = "retraining the recommendation model"
                report.model_retrained = _retrain(ws, models, staging, report)
            step = "committing"
    except NotFoundError:
        shutil.rmtree(staging, ignore_errors=True)
        ws.log.reload_suppression()
        raise
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        ws.log.reload_suppression()
        raise ErasureFailedError(step, exc) from exc
    _swap_models(models, staging)
    ws.log.reload_suppression()
    if mode in ("delete", "suppress_and_delete"):
        try:
            if not ws.engine.compact():  # deleted rows' bytes leave the file, not only its tables
                report.notes.append(
                    "the database file is rewritten (the erased rows' bytes leaving its free space) as the "
                    "last connection to it closes, as a running server stops, since others are open now"
                )
        except Exception as exc:  # noqa: BLE001 - the erasure itself has committed; say what is left
            report.notes.append(
                f"the database file could not be rewritten ({type(exc).__name__}): the erased "
                "rows are gone from every table, but their bytes may stay in the file's free "
                "space until it is rewritten"
            )
    return report


def refresh_identities(ws: Workspace) -> None:
    """Bring the identity graph up to the log, so a person is everything they are now."""
    if ws.engine.has_table("identity_state"):
        update_identities(ws.engine, ws.pseudonymiser)
    else:
        resolve_identities(ws.engine, ws.pseudonymiser)


def _erase_in_transaction(ws: Workspace, key: str, mode: str, raw_values: tuple[str, ...]) -> ErasureReport:
    engine = ws.engine
    person_id = find_person(engine, key, ws.pseudonymiser)
    report = ErasureReport(mode, ws.pseudonymiser.fingerprint(f"erasure:{person_id}".encode()))
    rows = engine.rows("SELECT identifier, identifier_type FROM identity_map WHERE person_id = ?", [person_id])
    subject = own_identifiers(engine, key, ws.pseudonymiser, [r["identifier"] for r in rows])
    others = len({r["identifier"] for r in rows}) - len(subject)
    rows = [r for r in rows if r["identifier"] in subject]
    report.notes.append(
        f"{len(subject)} of the person's identifiers are the requester's; "
        f"{others} joined through a shared identifier stay with the others"
    )
    types = {r["identifier"].split(":", 1)[1]: r["identifier_type"] for r in rows}
    values = sorted(types)
    person_ids = {person_id} | {
        r["old_person_id"]
        for r in engine.rows("SELECT old_person_id FROM person_redirects WHERE person_id = ?", [person_id])
    }
    report.identifiers = len(values)
    if mode in ("suppress", "suppress_and_delete"):
        report.suppressed = ws.suppression.add(types)
    if mode in ("delete", "suppress_and_delete"):
        report.events_deleted, report.rejected_deleted = delete_events_naming(engine, ws.cipher, values, raw_values)
        report.history_rows_deleted = forget_interactions(engine, person_ids)
        report.history_rows_deleted += forget_persons(engine, ws.pseudonymiser, person_ids, values)
        report.history_rows_deleted += forget_members(engine, person_ids)
        report.history_rows_deleted += forget_contacts(engine, [r["identifier"] for r in rows])
        report.history_rows_deleted += forget_lifetime(engine, person_ids)
        build_profiles(engine)
        report.persons_after = engine.scalar("SELECT count(*) FROM persons")
    return report


def _retrain(ws: Workspace, models: Path, staging: Path, report: ErasureReport) -> bool:
    """Train the model again without the person, into ``staging`` (swapped in after the commit), with
    the serving rules the old model was trained with. False when nothing is left to train on."""
    try:
        serving = ServingConfig(**json.loads((models / "index.json").read_text()).get("serving", {}))
    except (ValueError, TypeError, OSError):
        serving = ServingConfig()
    try:
        Recommendations.train(ws.engine, ws.pseudonymiser, staging, serving=serving)
    except NothingToTrainError:  # nothing left to train on: the model and what it was trained on go
        ws.engine.execute("DROP TABLE IF EXISTS interactions")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        report.notes.append("no interactions left to train on: the model was removed")
        return False
    return True


def current_serving(ws: Workspace) -> ServingConfig | None:
    """The serving rules the model in place was trained with (None where there is none)."""
    try:
        index = json.loads((ws.settings.data_dir / "models" / "index.json").read_text())
        return ServingConfig(**index.get("serving", {}))
    except (ValueError, TypeError, OSError):
        return None


def train_model(ws: Workspace, serving: ServingConfig | None = None) -> Recommendations:
    """Train the recommendation model on the log into a folder of its own, then swap it in for the old one:
    a server keeps answering from the model it loaded until it loads this one, and never reads one half
    written."""
    models = ws.settings.data_dir / "models"
    staging = models.with_name(f"models.training-{uuid.uuid4().hex[:12]}")
    with training_lock:
        try:
            trained = Recommendations.train(ws.engine, ws.pseudonymiser, staging, serving=serving or ServingConfig())
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _swap_models(models, staging)
    trained.directory = models
    return trained


def _swap_models(models: Path, staging: Path) -> None:
    """Put the retrained model (or, when nothing was left to train on, no model) in place of the old."""
    if not staging.exists():
        return
    retired = models.with_name(f"models.retired-{uuid.uuid4().hex[:12]}")
    if models.exists():
        models.rename(retired)
    staging.rename(models)
    shutil.rmtree(retired, ignore_errors=True)
