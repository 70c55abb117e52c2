"""The HTTP service: a Segment-compatible collector and the read API, over one data directory.

Collector (write keys): ``POST /v1/track``, ``/v1/identify``, ``/v1/page``, ``/v1/screen``,
``/v1/alias``, ``/v1/group`` and ``/v1/batch``, authenticated as Segment's clients do it (the write
key as the HTTP Basic user name, or ``writeKey`` in the body), gzip bodies accepted, Segment's
limits (32 KB an event, 500 KB a batch). Every event goes through the same validation, pseudonymisation
and log as file import; the answer is sent only after the log has committed, so nothing acknowledged
is lost, and a retried ``messageId`` is stored once. Success answers ``{"success": true}``; events
that fail validation are kept as rejected (replayable) and the answer says why, with HTTP 400 when
nothing in the request was accepted.

Read API (read keys; every read of personal data is audited): a person's profile and identities,
recommendations on every surface, a store's receipts and visits. ``GET /openapi.json`` describes it all.
"""

from __future__ import annotations

import base64
import threading
import zlib
from datetime import UTC, datetime

import numpy as np
import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from omnithread.api.keys import ApiKey, KeyStore
from omnithread.config import Settings
from omnithread.engine.tables import message_key
from omnithread.errors import OmnithreadError
from omnithread.events.schema import MAX_BATCH_BYTES
from omnithread.privacy.secret import load_secret
from omnithread.workspace import Workspace

__all__ = ["create_app", "CALLS"]

CALLS = ("track", "identify", "page", "screen", "alias", "group")
MAX_BODY = MAX_BATCH_BYTES + 64 * 1024  # a batch at the limit, with room for its envelope


class Service:
    """The workspace and key store one server process holds, with a lock around the event log."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ws = Workspace(settings)
        self.keys = KeyStore(settings.data_dir, load_secret(settings.data_dir))
        self.lock = threading.RLock()
        self._recommendations = None
        self._queue: list[dict] = []
        # the message keys of the log (loaded at the first write, sorted) and of what this process stored since
        self._keys: np.ndarray | None = None
        self._new_keys: set[int] = set()
        self._cv = threading.Condition()
        threading.Thread(target=self._committer, name="group-commit", daemon=True).start()

    def connect(self) -> None:
        """Fold events that arrived since the last resolution into persons (incrementally), so reads
        see them; the first time, resolve the whole log. Profiles are rebuilt when anything changed."""
        from omnithread.identity import resolve_identities
        from omnithread.identity.incremental import update_identities
        from omnithread.profile import build_profiles

        engine = self.ws.engine
        if not engine.has_table("identity_state"):
            resolve_identities(engine, self.ws.pseudonymiser)  # also on an empty log: empty tables, clear 404s
            build_profiles(engine)
            return
        if update_identities(engine, self.ws.pseudonymiser).events:
            build_profiles(engine)

    def recommendations(self):
        from omnithread.errors import NotFoundError
        from omnithread.recommend.service import Recommendations

        if self._recommendations is None:
            directory = self.settings.data_dir / "models"
            try:
                self._recommendations = Recommendations.open(self.ws.engine, self.ws.pseudonymiser, directory)
            except NotFoundError:
                from omnithread.errors import NothingToTrainError

                try:
                    self._recommendations = Recommendations.train(self.ws.engine, self.ws.pseudonymiser, directory)
                except NothingToTrainError as exc:
                    raise NotFoundError("trained recommendation model", f"none yet ({exc})") from exc
        return self._recommendations

    # -- group commit: requests that arrive while one write runs share the next one
    def commit(self, rows: list[tuple], rejected: list[tuple]) -> set[str]:
        """Store ``rows`` (and ``rejected``) in the next group write; returns the message ids stored.
        Blocks until the write has committed, so an answer is never sent before."""
        item = {"rows": rows, "rejected": rejected, "done": False}
        with self._cv:
            self._queue.append(item)
            self._cv.notify_all()
            while not item["done"]:
                self._cv.wait()
        if "error" in item:
            raise item["error"]
        return item["stored"]

    def _committer(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                group, self._queue = self._queue, []
            try:
                with self.lock:
                    offered = [r for item in group for r in item["rows"]]
                    keys = [message_key(r[0]) for r in offered]
                    # ids are compared only where a key is already in the log (a retry, almost always)
                    stored_before = self.ws.log.stored_ids(k for k, hit in zip(keys, self._known(keys)) if hit)
                    seen, rows, new_keys = set(), [], []
                    for r, k in zip(offered, keys):  # the first of a message id within the group wins
                        if r[0] not in seen and r[0] not in stored_before:
                            seen.add(r[0])
                            rows.append(r)
                            new_keys.append(k)
                    stored = set(self.ws.log.append_known_new(rows))
                    self._remember([k for r, k in zip(rows, new_keys) if r[0] in stored])
                    rejected = [r for item in group for r in item["rejected"]]
                    if rejected:
                        self.ws.log.add_rejected(rejected)
                owner: dict[str, int] = {}
                for k, item in enumerate(group):
                    for r in item["rows"]:
                        owner.setdefault(r[0], k)
                for k, item in enumerate(group):
                    item["stored"] = {m for m in (r[0] for r in item["rows"]) if m in stored and owner[m] == k}
            except Exception as exc:  # noqa: BLE001 - every waiter gets the failure, none a false success
                for item in group:
                    item["error"] = exc
            with self._cv:
                for item in group:
                    item["done"] = True
                self._cv.notify_all()

    def _known(self, keys: list[int]) -> list[bool]:
        """Whether each message key may be in the log: in the keys loaded at the first write, or stored since.
        Held as a sorted array of numbers (8 bytes an event), not the ids themselves."""
        if self._keys is None:
            self._keys, self._new_keys = self.ws.log.message_keys(), set()
        wanted = np.array(keys, dtype=np.uint64)
        at = np.minimum(np.searchsorted(self._keys, wanted), max(len(self._keys) - 1, 0))
        loaded = (self._keys[at] == wanted) if len(self._keys) else np.zeros(len(keys), dtype=bool)
        return [bool(hit) or k in self._new_keys for hit, k in zip(loaded, keys)]

    def _remember(self, keys: list[int]) -> None:
        self._new_keys.update(keys)
        if len(self._new_keys) > 1_000_000:  # folded into the sorted array now and then
            self._keys = np.union1d(self._keys, np.fromiter(self._new_keys, dtype=np.uint64, count=len(self._new_keys)))
            self._new_keys = set()

    def forget_keys(self) -> None:
        """Something wrote to the log outside the collector: read its keys again before the next write."""
        self._keys = None

    def close(self) -> None:
        self.ws.close()
        self.keys.close()


def _problem(status: int, code: str, message: str, **extra) -> JSONResponse:
    return JSONResponse({"success": False, "code": code, "message": message, **extra}, status_code=status)


def _basic_user(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        return decoded.split(":", 1)[0] or None
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def create_app(settings: Settings) -> FastAPI:
    service = Service(settings)
    app = FastAPI(title="omnithread", version="1", description=__doc__.split("\n\n")[0])
    app.state.service = service

    @app.on_event("shutdown")
    def _close() -> None:  # pragma: no cover - exercised by the server process
        service.close()

    def authorised(role: str):
        def check(request: Request) -> ApiKey:
            key = service.keys.check(_basic_user(request) or request.headers.get("x-api-key"))
            if key is None:
                service.keys.audit(None, f"{request.method} {request.url.path}", None, "refused: no valid key")
                raise HTTPException(401, detail={"code": "unauthorised", "message": "a valid API key is required"},
                                    headers={"WWW-Authenticate": 'Basic realm="omnithread"'})
            if key.role != role and key.role != "admin":
                service.keys.audit(key, f"{request.method} {request.url.path}", None, f"refused: needs {role}")
                raise HTTPException(403, detail={"code": "forbidden",
                                                 "message": f"a {key.role} key cannot do this; it needs a {role} key"})
            if not service.keys.allow(key):
                raise HTTPException(429, detail={"code": "rate_limited",
                                                 "message": f"key {key.key_id} is over its rate limit"},
                                    headers={"Retry-After": "1"})
            return key
        return check

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, dict) else {
            "code": {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error"),
            "message": f"{exc.detail}: {request.method} {request.url.path}"}
        return JSONResponse({"success": False, **detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_parameters(request: Request, exc: RequestValidationError):
        problems = [{"field": ".".join(str(x) for x in e.get("loc", ())), "message": e.get("msg", "")}
                    for e in exc.errors()]
        return JSONResponse({"success": False, "code": "invalid_parameters",
                             "message": "; ".join(f"{p['field']}: {p['message']}" for p in problems),
                             "problems": problems}, status_code=400)

    @app.exception_handler(OmnithreadError)
    async def _domain_error(request: Request, exc: OmnithreadError):
        from omnithread.errors import ConfigError

        # a bad value in a request is the client's to fix, not the server's
        status = 400 if isinstance(exc, ConfigError) else exc.http_status
        return JSONResponse({"success": False, "code": type(exc).__name__, "message": str(exc)}, status_code=status)

    async def _body(request: Request) -> bytes:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise HTTPException(413, detail={"code": "body_too_large",
                                             "message": f"the body is {len(raw)} bytes; the limit is {MAX_BODY}"})
        encoding = request.headers.get("content-encoding", "").lower()
        if encoding == "gzip":
            try:
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                raw = d.decompress(raw, MAX_BODY + 1)
            except zlib.error as exc:
                raise HTTPException(400, detail={"code": "invalid_gzip", "message": f"the body is not gzip: {exc}"})
            if len(raw) > MAX_BODY:
                raise HTTPException(413, detail={"code": "body_too_large",
                                                 "message": f"the body unzips to more than {MAX_BODY} bytes"})
        elif encoding not in ("", "identity"):
            raise HTTPException(415, detail={"code": "unsupported_encoding",
                                             "message": f"Content-Encoding {encoding!r} is not supported; use gzip"})
        return raw

    def _collect(raw: bytes, call: str | None, key: ApiKey) -> JSONResponse:
        payload = _json_object(raw)
        if call is None and not isinstance(payload.get("batch"), list):
            return _problem(400, "missing_field", "a batch needs a 'batch' array of calls")
        if call is not None:
            payload.setdefault("type", call)
            if payload.get("type") != call:
                return _problem(400, "invalid_call", f"/v1/{call} takes {call} calls, not {payload.get('type')!r}")
        payload.pop("writeKey", None)
        received = datetime.now(UTC)
        source = f"http:{key.key_id}:{received.isoformat()}"
        ingestor = service.ws.ingestor(received_at=received)  # validation needs no lock: it writes nothing
        ingestor.begin(source)
        ingestor._submit_parsed(payload, raw, source)
        staged, rejected_rows = list(ingestor._pending.values()), list(ingestor._rejected.values())
        ingestor._pending.clear()
        ingestor._rejected.clear()
        stored = service.commit(staged, rejected_rows)  # committed before the answer: nothing acknowledged is lost
        accepted = len(stored)
        duplicates = len(staged) - accepted + ingestor._pending_duplicates
        rejected = [{"source": row[2], "reasons": orjson.loads(row[5])} for row in rejected_rows]
        body = {"success": True, "accepted": accepted, "duplicates": duplicates}
        if rejected:
            body["rejected"] = [{"index": int(r["source"].rsplit("#", 1)[1]) if "#" in r["source"] else 0,
                                 "reasons": [x.get("message", x) if isinstance(x, dict) else x for x in r["reasons"]]}
                                for r in rejected]
            if accepted == 0 and duplicates == 0:
                body["success"] = False
                return JSONResponse(body, status_code=400)
        return JSONResponse(body)

    def _write_key_from_body(raw: bytes) -> str | None:
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return payload.get("writeKey") if isinstance(payload, dict) else None

    async def _authorised_write(request: Request) -> tuple[ApiKey, bytes]:
        raw = await _body(request)
        presented = _basic_user(request) or request.headers.get("x-api-key") or _write_key_from_body(raw)
        key = service.keys.check(presented)
        if key is None:
            raise HTTPException(401, detail={"code": "unauthorised", "message": "a valid write key is required "
                                             "(HTTP Basic user name, as Segment's clients send it)"},
                                headers={"WWW-Authenticate": 'Basic realm="omnithread"'})
        if key.role not in ("write", "admin"):
            raise HTTPException(403, detail={"code": "forbidden",
                                             "message": f"a {key.role} key cannot send events; use a write key"})
        if not service.keys.allow(key):
            raise HTTPException(429, detail={"code": "rate_limited", "message": f"key {key.key_id} is over its rate "
                                             "limit"}, headers={"Retry-After": "1"})
        return key, raw

    call_schema = {
        "type": "object", "additionalProperties": True,
        "description": "A Segment call; see docs/events.md for every event, field and type.",
        "properties": {
            "type": {"type": "string", "enum": list(CALLS)}, "messageId": {"type": "string"},
            "userId": {"type": "string"}, "anonymousId": {"type": "string"}, "event": {"type": "string"},
            "name": {"type": "string"}, "previousId": {"type": "string"}, "groupId": {"type": "string"},
            "properties": {"type": "object"}, "traits": {"type": "object"}, "context": {"type": "object"},
            "timestamp": {"type": "string", "format": "date-time"},
            "originalTimestamp": {"type": "string", "format": "date-time"},
            "sentAt": {"type": "string", "format": "date-time"}}}
    batch_schema = {"type": "object", "required": ["batch"], "additionalProperties": True, "properties": {
        "batch": {"type": "array", "items": call_schema}, "sentAt": {"type": "string", "format": "date-time"},
        "context": {"type": "object"}, "writeKey": {"type": "string"}}}

    def _body_doc(schema: dict) -> dict:
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
                "responses": {"200": {"description": "stored (see accepted, duplicates, rejected)"},
                              "400": {"description": "nothing accepted: the reasons are in the answer"},
                              "401": {"description": "no valid write key"}, "403": {"description": "not a write key"},
                              "413": {"description": "body too large"}}}

    def _write_endpoint(handle, what: str):
        """An endpoint that checks the write key, then runs ``handle(raw, what, key)`` off the event loop."""
        async def endpoint(request: Request):
            key, raw = await _authorised_write(request)
            return await run_in_threadpool(handle, raw, what, key)
        endpoint.__name__ = f"send_{what}"
        return endpoint

    for call in CALLS:
        app.add_api_route(f"/v1/{call}", _write_endpoint(_collect, call), methods=["POST"], tags=["collector"],
                          summary=f"Send one {call} call (Segment HTTP Tracking API)",
                          openapi_extra=_body_doc({**call_schema, "properties": {
                              **call_schema["properties"], "type": {"type": "string", "enum": [call]}}}))

    @app.post("/v1/batch", tags=["collector"], summary="Send a batch of calls (Segment HTTP Tracking API)",
              openapi_extra=_body_doc(batch_schema))
    async def batch(request: Request):
        key, raw = await _authorised_write(request)
        return await run_in_threadpool(_collect, raw, None, key)

    app.add_api_route("/v1/import", batch, methods=["POST"], tags=["collector"], summary="Alias of /v1/batch",
                      openapi_extra=_body_doc(batch_schema))

    # ------------------------------------------------------------------ reference data: catalogue, stock

    def _reference(raw: bytes, kind: str, key: ApiKey) -> JSONResponse:
        payload = _json_object(raw)
        rows = payload.get("rows")
        if not isinstance(rows, list):
            return _problem(400, "missing_field", f"/v1/{kind} needs a 'rows' array of {kind} rows")
        received = datetime.now(UTC)
        source = f"http:{key.key_id}:{received.isoformat()}"
        with service.lock:
            ingestor = service.ws.ingestor(received_at=received)
            ingestor.begin(source)
            for line, row in enumerate(rows, start=1):
                if isinstance(row, dict):
                    ingestor.submit_reference_row(kind, line, row, source)
                else:
                    ingestor.reject_reference_text(kind, line, orjson.dumps(row).decode(), source)
            refused = [{"index": int(r[2].rsplit(":", 1)[1]) - 1,
                        "reasons": [x["message"] for x in orjson.loads(r[5])]} for r in ingestor._rejected.values()]
            ingestor.flush()  # written before the answer, refused rows kept with their reasons
            if service._recommendations is not None:
                service._recommendations.refresh()  # the next answer reads the new stock
        report = ingestor.report
        body = {"success": not refused or report.accepted + report.duplicates > 0, "accepted": report.accepted,
                "unchanged": report.duplicates}
        if refused:
            body["rejected"] = sorted(refused, key=lambda r: r["index"])
        return JSONResponse(body, status_code=200 if body["success"] else 400)

    from omnithread.ingest.reference import COLUMNS as REFERENCE_COLUMNS

    _json_types = {"text": "string", "number": "number", "boolean": "boolean", "time": "string"}
    for kind, summary in (("catalogue", "Products: a row replaces its product's (name, category, price, "
                                        "available, launched_at)"),
                          ("inventory", "Stock per store (or 'online'): units in stock as of a time; an older count "
                                        "never replaces a newer one")):
        row_schema = {"type": "object", "properties": {c: {"type": _json_types[t]}
                                                       for c, t in REFERENCE_COLUMNS[kind].items()}}
        app.add_api_route(f"/v1/{kind}", _write_endpoint(_reference, kind), methods=["POST"], tags=["reference"],
                          summary=summary, openapi_extra=_body_doc({
                              "type": "object", "required": ["rows"],
                              "properties": {"rows": {"type": "array", "items": row_schema}}}))

    # ------------------------------------------------------------------ read API

    @app.get("/v1/persons/{key}", tags=["read"], summary="A person: profile, identities and activity")
    def person(key: str, who: ApiKey = Depends(authorised("read"))):
        from omnithread.identity.lookup import describe_person, find_person
        from omnithread.profile import get_profile

        with service.lock:
            service.connect()
            try:
                person_id = find_person(service.ws.engine, key, service.ws.pseudonymiser)
            except OmnithreadError:
                service.keys.audit(who, "read person", None, "not found")
                raise
            described = describe_person(service.ws.engine, person_id)
            try:
                profile = get_profile(service.ws.engine, person_id)
            except Exception:  # noqa: BLE001 - no profiles built yet
                profile = None
        service.keys.audit(who, "read person", _fingerprint(person_id), "ok")
        return _jsonable({"person_id": person_id, "profile": profile, **described})

    @app.get("/v1/recommendations", tags=["read"], summary="Recommendations on any surface")
    def recommendations(person: str | None = None, surface: str = "for_you", store: str | None = None,
                        product: str | None = None, basket: str | None = None,
                        n: int = Query(10, ge=1, le=500), who: ApiKey = Depends(authorised("read"))):
        with service.lock:
            service.connect()
            answer = service.recommendations().recommend(
                person, surface, n=n, store=store, product=product, basket=basket.split(",") if basket else None)
        service.keys.audit(who, f"recommendations {surface}",
                           _fingerprint(answer.person_id) if answer.person_id else None, "ok")
        return answer.as_dict()

    @app.get("/v1/stores/{store_id}/receipts", tags=["read"], summary="A store's receipts and visits")
    def receipts(store_id: str, limit: int = Query(50, ge=1, le=1000), who: ApiKey = Depends(authorised("read"))):
        with service.lock:
            rows = service.ws.engine.rows("""
                SELECT message_id, event, event_at, anonymous_id,
                       properties->>'order_id' AS order_id, properties->>'visit_id' AS visit_id,
                       TRY_CAST(properties->>'total' AS DOUBLE) AS total,
                       properties->>'review_required' AS review_required
                FROM events WHERE store_id = ? AND event IN ('Order Completed', 'Store Entered', 'Store Exited')
                ORDER BY event_at DESC, message_id LIMIT ?""", [store_id, limit])
        service.keys.audit(who, "read store receipts", store_id, "ok")
        return _jsonable({"store_id": store_id, "events": rows})

    @app.get("/v1/stores/{store_id}/inventory", tags=["read"],
             summary="A location's stock as imported (a store id, or 'online'), with each product's catalogue state")
    def inventory(store_id: str, product: str | None = None, limit: int = Query(1000, ge=1, le=100_000),
                  who: ApiKey = Depends(authorised("read"))):
        from omnithread.ingest.reference import ensure_reference_tables

        with service.lock:
            ensure_reference_tables(service.ws.engine)
            rows = service.ws.engine.rows(f"""
                SELECT i.product_id, i.quantity, i.quantity > 0 AS in_stock, i.as_of,
                       c.available IS NOT false AS on_sale
                FROM inventory i LEFT JOIN catalogue c USING (product_id)
                WHERE i.store_id = ?{" AND i.product_id = ?" if product else ""}
                ORDER BY i.product_id LIMIT ?""", [store_id] + ([product] if product else []) + [limit])
        service.keys.audit(who, "read inventory", store_id, "ok")
        if not rows and not product:
            raise HTTPException(404, detail={"code": "not_found", "message": f"no inventory imported for {store_id!r}: "
                                             "recommendations there infer stock from recent sales"})
        return _jsonable({"store_id": store_id, "products": rows})

    # ------------------------------------------------------------------ admin: consent, erasure, audit

    @app.post("/v1/admin/consent", tags=["admin"], summary="Record a person's consent per purpose")
    async def consent(request: Request, who: ApiKey = Depends(authorised("admin"))):
        from omnithread.privacy.consent import record_consent

        body = _json_object(await _body(request))
        with service.lock:
            result = record_consent(service.ws, str(body.get("person", "")), body.get("purposes"),
                                    str(body.get("source") or "api"))
            service.forget_keys()  # written outside the collector: re-read before the next write
        service.keys.audit(who, "record consent", _fingerprint(result["person_id"]), "ok",
                           orjson.dumps(result["purposes"]).decode())
        return result

    @app.post("/v1/admin/erasure", tags=["admin"],
              summary="Erase a person: suppress, suppress_and_delete or delete (Segment's regulation types)")
    async def erasure(request: Request, who: ApiKey = Depends(authorised("admin"))):
        from omnithread.privacy.erasure import check_request, erase

        body = _json_object(await _body(request))
        key, mode, raw_values = check_request(body.get("person"), body.get("mode", "suppress_and_delete"),
                                              body.get("raw_values", ()))
        try:
            with service.lock:
                try:
                    report = erase(service.ws, key, mode, raw_values)
                finally:
                    service._recommendations = None  # reopened from the (retrained) model
                    service.forget_keys()
        except OmnithreadError as exc:
            service.keys.audit(who, f"erasure {mode}", service.ws.pseudonymiser.fingerprint(f"erasure:{key}".encode()),
                               f"failed: {type(exc).__name__}")
            raise
        service.keys.audit(who, f"erasure {mode}", report.request_id, "done",
                           f"events {report.events_deleted}, rejected {report.rejected_deleted}")
        return report.as_dict()

    @app.get("/v1/admin/audit", tags=["admin"], summary="The newest audit log entries")
    def audit(limit: int = Query(100, ge=1, le=10_000), who: ApiKey = Depends(authorised("admin"))):
        entries = service.keys.audit_entries(limit)
        service.keys.audit(who, "read audit log", None, "ok")
        return {"entries": entries}

    from omnithread.api.dashboard import mount

    mount(app, service, authorised)

    @app.get("/health", tags=["service"], summary="Is the service up, and how many events does it hold")
    def health():
        with service.lock:
            count = service.ws.log.count()
        return {"ok": True, "events": count}

    return app


def _json_object(raw: bytes) -> dict:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, detail={"code": "invalid_json", "message": f"the body is not JSON: {exc}"})
    if not isinstance(body, dict):
        raise HTTPException(400, detail={"code": "not_an_object",
                                         "message": f"the body must be a JSON object, not {type(body).__name__}"})
    return body


def _fingerprint(person_id: str) -> str:
    """What the audit log keeps of a person: a one-way digest, meaningless once the person is erased."""
    import hashlib

    return "person:" + hashlib.sha256(person_id.encode()).hexdigest()[:16]


def _jsonable(value):
    return orjson.loads(orjson.dumps(value, default=str))
