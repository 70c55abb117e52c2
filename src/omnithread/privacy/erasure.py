"""Erasure and suppression, in the manner of Segment's regulations.

* ``suppress``: the person's identifiers (as stored: keyed hashes, account and device ids) go on the
  suppression list; events naming any of them are refused at the door from then on (not stored, not
  kept as rejected), on every import path and the collector.
* ``delete``: the person's events are deleted (every event given to them, and every event naming one
  of their identifiers), with the rejected payloads that carry their identifiers; the identity graph
  and the persons are rebuilt from what is left (so where they joined other people, those split
  again), profiles too; change history and redirects that name them are removed; a trained
  recommendation model is retrained without them.
* ``suppress_and_delete``: both.

What is logged: the request's mode, when, by which key, and counts; never the person's identifiers
(the audit target is a keyed fingerprint of the request).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from omnithread.engine.base import names_any_sql
from omnithread.errors import ErasureFailedError, InvalidRequestError, NotFoundError, NothingToTrainError

__all__ = ["MODES", "ErasureReport", "erase", "check_request", "SUPPRESSION_TABLE"]

MODES = ("suppress", "delete", "suppress_and_delete")
SUPPRESSION_TABLE = "suppressed_identifiers"


@dataclass
class ErasureReport:
    mode: str
    request_id: str
    identifiers: int = 0
    events_deleted: int = 0
    rejected_deleted: int = 0
    history_rows_deleted: int = 0
    suppressed: int = 0
    persons_after: int = 0
    model_retrained: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def ensure_suppression_table(engine) -> None:
    engine.execute(f"""CREATE TABLE IF NOT EXISTS {SUPPRESSION_TABLE} (
        value VARCHAR PRIMARY KEY, identifier_type VARCHAR, suppressed_at TIMESTAMPTZ DEFAULT now())""")


def check_request(key: object, mode: object, raw_values: object) -> tuple[str, str, tuple[str, ...]]:
    """An erasure request's parts, checked: every problem names the field and the value."""
    if not isinstance(key, str) or not key.strip():
        raise InvalidRequestError("person", key, "the person id or one of their identifiers, as a non-empty string")
    if mode not in MODES:
        raise InvalidRequestError("mode", mode, f"one of {', '.join(MODES)}")
    if raw_values is None:
        raw_values = ()
    if not isinstance(raw_values, (list, tuple)) or not all(isinstance(v, str) for v in raw_values):
        raise InvalidRequestError("raw_values", raw_values, "a list of strings (raw emails, phones)")
    return key.strip(), mode, tuple(v for v in raw_values if v)


def erase(ws, key: str, mode: str = "suppress_and_delete", raw_values: tuple[str, ...] = ()) -> ErasureReport:
    """Carry out an erasure request for the person found by ``key`` (person id or any identifier).

    All or nothing: the identifiers seen since the last resolution are folded in first (so a device or
    phone first seen a minute ago is the person's too), then every table changes in one transaction and
    a retrained model replaces the old one only once that transaction has committed. If any step fails,
    nothing has changed and :class:`ErasureFailedError` says which step. ``raw_values`` are raw forms the
    requester gave (an email, a phone) to look for in encrypted rejected payloads, which hold unparseable
    input that was never pseudonymised field by field."""
    key, mode, raw_values = check_request(key, mode, raw_values)
    models = ws.settings.data_dir / "models"
    staging = models.with_name("models.erasure")
    shutil.rmtree(staging, ignore_errors=True)
    step = "finding the person"
    try:
        with ws.engine.transaction():
            _fold_new_identifiers(ws)
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
    _swap_models(models, staging, report)
    ws.log.reload_suppression()
    if mode in ("delete", "suppress_and_delete"):
        try:
            ws.engine.compact()  # deleted rows' bytes leave the file, not only its tables
        except Exception as exc:  # noqa: BLE001 - the erasure itself has committed; say what is left
            report.notes.append(f"the database file could not be rewritten ({type(exc).__name__}): the erased "
                                "rows are gone from every table, but their bytes may stay in the file's free "
                                "space until it is rewritten")
    return report


def _fold_new_identifiers(ws) -> None:
    """Bring the identity graph up to the log, so the person is everything they are now."""
    from omnithread.identity import resolve_identities
    from omnithread.identity.incremental import update_identities

    if ws.engine.has_table("identity_state"):
        update_identities(ws.engine, ws.pseudonymiser)
    else:
        resolve_identities(ws.engine, ws.pseudonymiser)


def _erase_in_transaction(ws, key: str, mode: str, raw_values: tuple[str, ...]) -> ErasureReport:
    from omnithread.identity import resolve_identities
    from omnithread.identity.lookup import find_person
    from omnithread.profile import build_profiles

    engine = ws.engine
    person_id = find_person(engine, key, ws.pseudonymiser)
    report = ErasureReport(mode, ws.pseudonymiser.fingerprint(f"erasure:{person_id}".encode()))
    rows = engine.rows("SELECT identifier, identifier_type FROM identity_map WHERE person_id = ?", [person_id])
    subject = _subject(engine, key, ws.pseudonymiser, [r["identifier"] for r in rows])
    others = len({r["identifier"] for r in rows}) - len(subject)
    rows = [r for r in rows if r["identifier"] in subject]
    report.notes.append(f"{len(subject)} of the person's identifiers are the requester's; "
                        f"{others} joined through a shared identifier stay with the others")
    values = sorted({r["identifier"].split(":", 1)[1] for r in rows})
    types = {r["identifier"].split(":", 1)[1]: r["identifier_type"] for r in rows}
    person_ids = {person_id} | {r["old_person_id"] for r in engine.rows(
        "SELECT old_person_id FROM person_redirects WHERE person_id = ?", [person_id])}
    report.identifiers = len(values)
    if mode in ("suppress", "suppress_and_delete"):
        ensure_suppression_table(engine)
        for v in values:
            engine.execute(f"INSERT INTO {SUPPRESSION_TABLE} (value, identifier_type) VALUES (?, ?) "
                           "ON CONFLICT DO NOTHING", [v, types[v]])
        report.suppressed = len(values)
    if mode in ("delete", "suppress_and_delete"):
        _delete(ws, person_id, person_ids, values, raw_values, report)
        marks = ", ".join("?" for _ in person_ids)
        if engine.has_table("interactions"):  # the last training's snapshot, rebuilt below if a model exists
            report.history_rows_deleted += _count_delete(engine, "interactions", f"person_id IN ({marks})",
                                                         [*person_ids])
        # nobody left behind inherits the erased person's id: the rebuild names their groups anew
        engine.execute(f"UPDATE identity_map SET person_id = NULL WHERE person_id IN ({marks})", [*person_ids])
        resolve_identities(engine, ws.pseudonymiser)
        for table, cols in (("person_redirects", ("old_person_id", "person_id")),
                            ("identity_changes", ("person_id", "other_person_id"))):
            where = " OR ".join(f"{c} IN ({marks})" for c in cols)
            report.history_rows_deleted += _count_delete(engine, table, where, [*person_ids] * len(cols))
        if values:
            value_marks = ", ".join("?" for _ in values)
            report.history_rows_deleted += _count_delete(
                engine, "identity_changes",
                f"split_part(a, ':', 2) IN ({value_marks}) OR split_part(b, ':', 2) IN ({value_marks})", values * 2)
        build_profiles(engine)
        report.persons_after = engine.scalar("SELECT count(*) FROM persons")
    return report


def _retrain(ws, models: Path, staging: Path, report: ErasureReport) -> bool:
    """Train the model again without the person, into ``staging`` (swapped in after the commit), with
    the serving rules the old model was trained with. False when nothing is left to train on."""
    from omnithread.recommend.service import Recommendations, ServingConfig

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


def _swap_models(models: Path, staging: Path, report: ErasureReport) -> None:
    """Put the retrained model (or, when nothing was left to train on, no model) in place of the old."""
    if not staging.exists():
        return
    retired = models.with_name("models.retired")
    shutil.rmtree(retired, ignore_errors=True)
    if models.exists():
        models.rename(retired)
    staging.rename(models)
    shutil.rmtree(retired, ignore_errors=True)


BRIDGES = ("payment_token", "device", "voice_device", "store_session")  # what families and households share
ANCHORS = ("account", "email", "phone", "loyalty_card", "palm_token", "app_code")  # one person's own


def _subject(engine, key: str, pseudonymiser, identifiers: list[str]) -> set[str]:
    """The requester's own identifiers within their resolved person.

    A person may hold other people joined through an identifier they share (a borrowed payment card,
    a household tablet). Starting from the identifier the request named, the graph's kept links are
    followed, but not through an identifier of a shareable kind (payment token, device, store visit):
    those are
    reached, and erased with the requester, but when two accounts, cards or other personal identifiers
    of one kind meet at such a shared identifier, what lies beyond it stays with the others. A request
    by person id cannot tell people apart and takes the whole person."""
    from omnithread.identity.lookup import _candidates

    mine = set(identifiers)
    start = [n for n in (_candidates(key, pseudonymiser) if not key.startswith("p_") else []) if n in mine]
    if not start:
        return mine
    links: dict[str, set[str]] = {}
    for e in engine.rows("SELECT a, b FROM identity_edges WHERE status = 'kept'"):
        if e["a"] in mine and e["b"] in mine:
            links.setdefault(e["a"], set()).add(e["b"])
            links.setdefault(e["b"], set()).add(e["a"])
    def shared(node: str) -> bool:
        # the personal identifiers this shareable one meets, directly or through other shareable ones
        anchors, around, stack = set(), {node}, [node]
        while stack:
            for n in links.get(stack.pop(), ()):
                if n.split(":", 1)[0] in ANCHORS:
                    anchors.add(n)
                elif n not in around:
                    around.add(n)
                    stack.append(n)
        kinds = [a.split(":", 1)[0] for a in anchors]
        return any(kinds.count(k) > 1 for k in set(kinds))

    seen, todo = set(start), list(start)
    while todo:
        node = todo.pop()
        if node.split(":", 1)[0] in BRIDGES and node not in start and shared(node):
            continue  # a card or device that two people's cards or accounts meet at: reached, not crossed
        for nxt in links.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _count_delete(engine, table: str, where: str, params) -> int:
    if not engine.has_table(table):
        return 0
    n = engine.scalar(f"SELECT count(*) FROM {table} WHERE {where}", params)
    if n:
        engine.execute(f"DELETE FROM {table} WHERE {where}", params)
    return n


def _delete(ws, person_id: str, person_ids: set[str], values: list[str], raw_values, report: ErasureReport) -> None:
    engine = ws.engine
    engine.execute("CREATE OR REPLACE TEMP TABLE _erase_ids (message_id VARCHAR)")
    if values:
        engine.register("_erase_values", _values_table(values))
        try:
            engine.execute(f"""INSERT INTO _erase_ids
                SELECT e.message_id FROM events e
                WHERE {names_any_sql('e', '_erase_values')} OR e.previous_id IN (SELECT v FROM _erase_values)""")
            report.rejected_deleted = _count_delete(
                engine, "rejected_events",
                "EXISTS (SELECT 1 FROM _erase_values x WHERE length(x.v) >= 8 AND "
                "contains(coalesce(CAST(payload AS VARCHAR), ''), x.v))", [])
        finally:
            engine.unregister("_erase_values")
    report.events_deleted = _count_delete(engine, "events", "message_id IN (SELECT message_id FROM _erase_ids)", [])
    # unparseable input is kept encrypted: open each and look for the person's values
    needles = [v.encode() for v in values if len(v) >= 8] + [r.encode() for r in raw_values if r]
    if needles:
        doomed = []
        for row in engine.rows("SELECT rejected_id, payload_encrypted FROM rejected_events "
                               "WHERE payload_encrypted IS NOT NULL"):
            try:
                plain = ws.cipher.decrypt(bytes(row["payload_encrypted"]))
            except Exception:  # noqa: BLE001 - unreadable under this key: cannot be theirs to judge; keep
                continue
            if any(n in plain for n in needles):
                doomed.append(row["rejected_id"])
        for rid in doomed:
            engine.execute("DELETE FROM rejected_events WHERE rejected_id = ?", [rid])
        report.rejected_deleted += len(doomed)
    engine.execute("DROP TABLE IF EXISTS _erase_ids")


def _values_table(values):
    import pyarrow as pa

    return pa.table({"v": pa.array(values, pa.string())})


def refused_by_suppression(values: frozenset[str], user_id, anonymous_id, *texts) -> bool:
    """Whether an event names a suppressed identifier (its ids, or a hash inside its JSON)."""
    if not values:
        return False
    if user_id in values or anonymous_id in values:
        return True
    for text in texts:
        if text and any(v in text for v in values if len(v) >= 8):
            return True
    return False
