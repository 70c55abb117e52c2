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
import contextlib
import hmac
import logging
import shutil
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import numpy as np
import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from omnithread.analytics.audiences import audience_members, list_audiences
from omnithread.api.dashboard import mount
from omnithread.api.jobs import CONTROL_HEADER, JOB_STATES, Job, JobOutcome, JobStore, JobWorker
from omnithread.api.keys import ApiKey, KeyStore
from omnithread.api.metrics import METRICS_CONTENT_TYPE, Metrics, RequestTimer
from omnithread.api.schedule import Schedule
from omnithread.config import Settings
from omnithread.engine.tables import EventRow, RejectedRow, message_key
from omnithread.errors import (
    ConfigError,
    ErasureFailedError,
    InvalidRequestError,
    NotFoundError,
    NothingToTrainError,
    OmnithreadError,
    UnavailableError,
    safe_message,
)
from omnithread.events.schema import MAX_BATCH_BYTES
from omnithread.flows import analytics_view, erase, record_consent, refresh_persons, train_model, training_lock
from omnithread.identity.lookup import describe_person, find_person
from omnithread.ingest.broker import Broker, encode_entry, open_broker
from omnithread.ingest.loader import Loader, wait_until_loaded
from omnithread.ingest.pipeline import Ingestor
from omnithread.ingest.reference import COLUMNS as REFERENCE_COLUMNS
from omnithread.ingest.reference import location_stock
from omnithread.privacy import PayloadCipher, Pseudonymiser
from omnithread.privacy.erasure import ErasureReport, check_request
from omnithread.privacy.payload import personal_data_rule
from omnithread.privacy.secret import load_secret
from omnithread.profile import get_profile
from omnithread.recommend.service import Recommendations
from omnithread.workspace import Workspace

__all__ = ["create_app", "CALLS", "ROLES"]

ROLES = ("all", "collector")
CALLS = ("track", "identify", "page", "screen", "alias", "group")
MAX_BODY = MAX_BATCH_BYTES + 64 * 1024  # a batch at the limit, with room for its envelope
MIN_FREE_BYTES = 64 << 20  # below this much free disk, /health says degraded
_log = logging.getLogger("omnithread.api")


def storage_problem(exc: BaseException) -> str | None:
    """``corrupt`` when ``exc`` says the database file is damaged, a short description when storage cannot
    take writes (a full disk, a file it may not write), else None."""
    text = str(getattr(exc, "cause", None) or exc)
    if "Corrupt database" in text or "checksum" in text or "Could not read enough bytes" in text:
        return "corrupt"
    for marker, kind in (
        ("No space left", "the disk is full"),
        ("database or disk is full", "the disk is full"),
        ("Permission denied", "a file of the data directory may not be written"),
        ("read-only", "the data directory is read-only"),
        ("Could not write", "a file of the data directory could not be written"),
    ):
        if marker in text:
            return kind
    return None


def unavailable(exc: BaseException) -> BaseException:
    """A storage failure as the 503 a client should retry later; anything else as it is."""
    kind = storage_problem(exc)
    if kind is None or isinstance(exc, UnavailableError):
        return exc
    return UnavailableError(
        "storage cannot take the request now: " + ("the database file is corrupt" if kind == "corrupt" else kind)
    )


# commands that only read (or write nothing of the log: keys live apart, the simulator writes its own files)
_READING_ONLY = frozenset(
    {"stats", "person", "recommend", "evaluate", "rejected list", "rejected show", "jobs", "simulate"}
    | {"keys create", "keys list", "keys revoke"}
)
# jobs that add, remove or refuse no event (the collector's message keys and suppression list stay right)
_LEAVE_THE_EVENTS = _READING_ONLY | {"train", "resolve", "catalogue", "inventory"}
# jobs that write nothing persons and profiles are made of (they read it, or append events, or write the model
# and the catalogue): they run without the work lock, so reads and refreshes never wait for them
_OUTSIDE_THE_WORK = _READING_ONLY | {"train", "ingest", "catalogue", "inventory"}
# jobs after which the model on disk may be another
_CHANGE_THE_MODEL = frozenset({"train", "erase", "demo"})
_READ_WAIT = 10.0  # seconds a read waits for the work lock before answering from the last resolution


class CollectorService:
    """What a collector process holds (``role="collector"``): the data directory's keys and secret and a broker,
    no engine. Requests are staged here as in the log's own server (validated, pseudonymised: nothing personal
    reaches the broker) and appended to the broker as one entry; the log's server loads them."""

    def __init__(self, settings: Settings):
        if not settings.broker:
            raise ConfigError("broker", "", "a Redis address (redis://host:6379/0): a collector process needs a broker")
        self.settings = settings
        secret = load_secret(settings.data_dir)
        self.pseudonymiser = Pseudonymiser(secret, settings.phone_region, settings.ip_mode)
        self.cipher = PayloadCipher(secret)
        self.keys = KeyStore(settings.data_dir, secret)
        self.broker = open_broker(settings.broker, settings.broker_stream)
        self.metrics = Metrics()
        self.ready = False
        self.corrupt: str | None = None
        self.queued = 0
        self._problems: tuple[float, list[str]] = (0.0, [])

    def start(self) -> None:
        for problem in self.problems():
            _log.warning("%s", problem)

    def ingestor(self, received_at: datetime) -> Ingestor:
        return Ingestor(None, self.pseudonymiser, self.cipher, self.settings, received_at)

    def commit(self, rows: list[EventRow], rejected: list[RejectedRow]) -> tuple[set[str], set[str]]:
        """Append the request's rows to the broker; answered once it holds them (it may still refuse events
        naming an erased person, or repeating a stored message id, as it loads them)."""
        if rows or rejected:
            self.broker.append(encode_entry(rows, rejected))
        self.queued += len(rows)
        return {r.message_id for r in rows}, set()

    def problems(self) -> list[str]:
        """The broker's problems, asked at most every 5 seconds."""
        if time.monotonic() - self._problems[0] > 5:
            self._problems = (time.monotonic(), self.broker.problems())
        return self._problems[1]

    def health(self) -> list[str]:
        return self.problems()

    def close(self) -> None:
        self.keys.close()
        self.broker.close()


class Service:
    """What one server process holds: three connections to the data directory's log, each with its lock, so
    collection never waits for reads or work, the key store and the jobs.

    ``ws`` (under ``lock``) is the collector's: only its group commits write through it. ``reader`` (under
    ``read_lock``) answers reads. ``worker`` (under ``work_lock``) does the stages' work that answers a
    request or keeps persons current: refreshes, consent, erasure; jobs hold ``work_lock`` too and open
    connections of their own. A read takes ``work_lock`` only if it is free (to fold new events in first),
    else it answers from the last resolution, so no read waits for a job either."""

    def __init__(self, settings: Settings, run_job: Callable[[Job], JobOutcome] | None = None):
        self.settings = settings
        self.ws = Workspace(settings)
        self.reader = Workspace(settings)
        self.worker = Workspace(settings)
        self.keys = KeyStore(settings.data_dir, load_secret(settings.data_dir))
        self.jobs = JobStore(
            settings.data_dir, self.ws.cipher, personal_data_rule(self.ws.pseudonymiser, self.ws.cipher).text
        )
        self.lock = threading.RLock()
        self.read_lock = threading.RLock()
        self.work_lock = threading.RLock()
        self.job_worker = (
            JobWorker(self.jobs, lambda job: self._run_job(run_job, job), self._after_job) if run_job else None
        )
        self.schedule = Schedule(self) if run_job else None
        self.metrics = Metrics()
        self.ready = False
        self._recommendations: Recommendations | None = None
        self._queue: list[dict] = []
        # the message keys of the log (loaded at the first write, sorted) and of what this process stored since
        self._keys: np.ndarray | None = None
        self._new_keys: set[int] = set()
        self._cv = threading.Condition()
        self.corrupt: str | None = None
        self.last_write_failure: tuple[float, str] | None = None
        # collectors of their own (``serve --role collector``) append to a broker; this process loads it
        self.broker: Broker | None = open_broker(settings.broker, settings.broker_stream) if settings.broker else None
        self.broker_stream = settings.broker_stream
        self.loader = (
            Loader(
                self.broker,
                lambda: self.ws.log.broker_position(self.broker_stream),
                self._load,
                lambda entry, source, problem: self.ws.ingestor().refused_raw(entry, source, problem),
            )
            if self.broker is not None
            else None
        )
        threading.Thread(target=self._committer, name="group-commit", daemon=True).start()
        threading.Thread(target=self.verify_storage, name="verify-storage", daemon=True).start()

    def start(self) -> None:
        """Start the jobs and the schedule (a server that runs the thread by itself), and the loader of the
        broker when there is one."""
        if self.loader is not None:
            self.loader.start()
        if self.job_worker is not None:
            self.job_worker.start()
        if self.schedule is not None:
            self.schedule.start()

    @contextlib.contextmanager
    def reading(self) -> Iterator[Workspace]:
        """The reader's workspace, with persons brought up to the log first: a read waits up to
        ``_READ_WAIT`` seconds for work under way (a refresh takes well under that), then answers from the
        last resolution rather than wait for a long job."""
        with self.read_lock:
            if self.work_lock.acquire(timeout=_READ_WAIT):
                try:
                    refresh_persons(self.worker)
                finally:
                    self.work_lock.release()
            yield self.reader

    def _run_job(self, run: Callable[[Job], JobOutcome], job: Job) -> JobOutcome:
        if job.kind in _OUTSIDE_THE_WORK:  # it writes nothing a refresh writes: refreshes go on beside it
            return run(job)
        with self.work_lock:
            return run(job)

    def erased(self) -> None:
        """After an erasure: once the loader has worked off what the broker held (events naming the person are
        refused as it loads them), the broker rewrites its files without the trimmed entries, in the background."""
        if self.loader is None or self.broker is None:
            return
        loader, broker = self.loader, self.broker

        def compact() -> None:
            try:
                if wait_until_loaded(loader, 120):
                    broker.forget_trimmed()
            except OmnithreadError as exc:
                _log.warning("the broker's files were not rewritten after an erasure: %s", safe_message(exc))

        threading.Thread(target=compact, name="broker-compact", daemon=True).start()

    def _after_job(self, job: Job) -> None:
        self.metrics.job_finished(job)
        if job.kind == "erase" and job.state == "done":
            self.erased()
        self.changed(
            model=job.kind in _CHANGE_THE_MODEL,
            events=job.kind not in _LEAVE_THE_EVENTS,
            suppression=job.kind not in _LEAVE_THE_EVENTS or job.kind == "resolve",
        )
        if self.schedule is not None:
            self.schedule.job_finished(job)

    def changed(self, model: bool = False, events: bool = True, suppression: bool = True) -> None:
        """Something other than the collector wrote to the log (a job, consent, an erasure): the collector
        reads its suppression list and message keys again (each only where the work may have changed it:
        both are read under the collector's lock), and the model is reloaded where it may have been
        retrained, in this thread, then swapped in (requests keep the old one until then)."""
        if events or suppression:
            with self.lock:
                if suppression:
                    self.ws.suppression.reload()
                if events:
                    self.forget_keys()
        if model:
            self.reload_model()
        self.stock_changed()

    def reload_model(self) -> None:
        directory = self.settings.data_dir / "models"
        try:
            with self.read_lock:
                fresh = Recommendations.open(self.reader.engine, self.reader.pseudonymiser, directory)
        except NotFoundError:
            fresh = None
        except OmnithreadError as exc:
            _log.warning("the retrained model could not be loaded: %s", safe_message(exc))
            return
        self._recommendations = fresh  # one assignment: a request has the old model or the new, whole

    def fingerprint(self, person_id: str) -> str:
        """What the audit log keeps of a person: a keyed digest, meaningless once the person is erased."""
        return "person:" + self.ws.pseudonymiser.fingerprint(b"audit person:" + person_id.encode())

    def note_failure(self, exc: BaseException) -> None:
        """Remember a storage failure for ``/health`` (a full disk for a while, a corrupt file for good)."""
        kind = storage_problem(exc)
        if kind == "corrupt":
            self.corrupt = "the database file is corrupt: reads of it fail; restore it from a backup"
        elif kind is not None:
            self.last_write_failure = (time.monotonic(), kind)

    def health(self) -> list[str]:
        """Why the service is not healthy (nothing when it is)."""
        reasons = []
        if self.corrupt:
            reasons.append(self.corrupt)
        free = shutil.disk_usage(self.settings.data_dir).free
        if free < MIN_FREE_BYTES:
            reasons.append(
                f"the disk holding the data directory has {free // (1 << 20)} MB free, less than "
                f"{MIN_FREE_BYTES >> 20} MB"
            )
        if self.last_write_failure and time.monotonic() - self.last_write_failure[0] < 60:
            reasons.append(f"writes failed in the last minute: {self.last_write_failure[1]}")
        return reasons

    def verify_storage(self) -> None:
        """Read every table of the database once, in the background, so a corrupt file shows in ``/health``
        before a read trips on it."""
        try:
            self.ws.engine.verify()
        except Exception as exc:  # noqa: BLE001 - whatever the engine raises, it is a storage problem to report
            self.note_failure(exc)
            if storage_problem(exc) is None:
                self.corrupt = f"the database could not be read through ({type(exc).__name__})"

    def recommendations(self):
        """The model requests are answered from (call under ``read_lock``); trained first if there is none."""
        if self._recommendations is None:
            directory = self.settings.data_dir / "models"
            try:
                self._recommendations = Recommendations.open(self.reader.engine, self.reader.pseudonymiser, directory)
            except NotFoundError:
                # the work connection is the work lock's (a refresh may be using it); a scheduled training may
                # be under way: its model, once it is there (locks in the order read, work, training)
                with self.work_lock, training_lock:
                    if not (directory / "index.json").is_file():
                        try:
                            train_model(self.worker)
                        except NothingToTrainError as exc:
                            raise NotFoundError("trained recommendation model", f"none yet ({exc})") from exc
                self._recommendations = Recommendations.open(self.reader.engine, self.reader.pseudonymiser, directory)
        return self._recommendations

    def stock_changed(self) -> None:
        """Stock or the catalogue changed: the next recommendation reads them again."""
        if self._recommendations is not None:
            self._recommendations.refresh()

    # -- group commit: requests that arrive while one write runs share the next one
    def commit(self, rows: list[EventRow], rejected: list[RejectedRow]) -> tuple[set[str], set[str]]:
        """Store ``rows`` (and ``rejected``) in the next group write; returns the message ids stored and those
        refused because they name a suppressed identifier. Blocks until the write has committed, so an answer
        is never sent before."""
        item = {"rows": rows, "rejected": rejected, "done": False}
        with self._cv:
            self._queue.append(item)
            self._cv.notify_all()
            while not item["done"]:
                self._cv.wait()
        if "error" in item:
            raise item["error"]  # type: ignore[misc]
        return item["stored"], item["suppressed"]  # type: ignore[return-value]

    def _committer(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                group, self._queue = self._queue, []
            try:
                offered = [r for item in group for r in item["rows"]]
                stored, refused = self.store(offered, [r for item in group for r in item["rejected"]])
                owner: dict[str, int] = {}
                for k, item in enumerate(group):
                    for r in item["rows"]:
                        owner.setdefault(r.message_id, k)
                for k, item in enumerate(group):
                    item["stored"] = {m for m in (r.message_id for r in item["rows"]) if m in stored and owner[m] == k}
                    item["suppressed"] = {
                        m for m in (r.message_id for r in item["rows"]) if m in refused and owner[m] == k
                    }
            except Exception as exc:  # noqa: BLE001 - every waiter gets the failure, none a false success
                self.note_failure(exc)
                for item in group:
                    item["error"] = unavailable(exc)
            with self._cv:
                for item in group:
                    item["done"] = True
                self._cv.notify_all()

    def ingestor(self, received_at: datetime) -> Ingestor:
        return self.ws.ingestor(received_at=received_at)

    def _load(self, rows: list[EventRow], rejected: list[RejectedRow], position: str) -> None:
        """A group of the broker's entries into the log (the loader's ``store``)."""
        try:
            stored, refused = self.store(rows, rejected, position)
        except Exception as exc:
            self.note_failure(exc)
            raise
        duplicates = len(rows) - len(stored) - len(refused)
        # the collector process counted its requests' refusals as it answered; here, entries it could not read
        bad = [r.reason_codes for r in rejected if (r.source or "").startswith("broker:")]
        self.metrics.collected(len(stored), duplicates, bad, len(refused))

    def store(
        self, offered: list[EventRow], rejected: list[RejectedRow], position: str | None = None
    ) -> tuple[set[str], set[str]]:
        """Store the events of ``offered`` whose message id is new (the first of an id wins) and keep
        ``rejected``, in one transaction with the broker ``position`` they reach when they came from the
        broker; returns the message ids stored and those refused as suppressed."""
        with self.lock:
            keys = [message_key(r.message_id) for r in offered]
            # ids are compared only where a key is already in the log (a retry, almost always)
            stored_before = self.ws.log.stored_ids(k for k, hit in zip(keys, self._known(keys)) if hit)
            seen, rows, new_keys = set(), [], []
            for r, k in zip(offered, keys):
                if r.message_id not in seen and r.message_id not in stored_before:
                    seen.add(r.message_id)
                    rows.append(r)
                    new_keys.append(k)
            together = self.ws.engine.transaction() if rejected or position is not None else contextlib.nullcontext()
            with together:
                stored = set(self.ws.log.append_known_new(rows))
                refused = self.ws.log.last_suppressed_ids
                if rejected:
                    self.ws.log.add_rejected(rejected)
                if position is not None and self.broker is not None:
                    self.ws.log.record_broker_position(self.broker_stream, position, datetime.now(UTC))
            self._remember([k for r, k in zip(rows, new_keys) if r.message_id in stored])
            return stored, refused

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
        if len(self._new_keys) > 1_000_000 and self._keys is not None:  # folded into the sorted array now and then
            self._keys = np.union1d(self._keys, np.fromiter(self._new_keys, dtype=np.uint64, count=len(self._new_keys)))
            self._new_keys = set()

    def forget_keys(self) -> None:
        """Something wrote to the log outside the collector: read its keys again before the next write."""
        self._keys = None

    def close(self) -> None:
        """Stop: no new job, the running one given ``stop_seconds`` to finish (else it runs again at the next
        start), then every connection closed."""
        if self.schedule is not None:
            self.schedule.stop()
        if self.loader is not None:
            self.loader.stop(self.settings.stop_seconds or None)
        if self.job_worker is not None and not self.job_worker.stop(self.settings.stop_seconds or None):
            _log.warning("a job was still running at shutdown; it runs again at the next start")
            return  # its connection is in use: the process exits without closing the log under it
        for ws in (self.ws, self.reader, self.worker):
            ws.close()
        self.keys.close()
        self.jobs.close()
        if self.broker is not None:
            self.broker.close()


def _columns(value: object) -> int | None:
    """The width of the terminal a job's output is for (the asker's), when it gives a sensible one."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 20 <= value <= 1000 else None


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


def create_app(
    settings: Settings,
    run_job: Callable[[Job], JobOutcome] | None = None,
    control_token: str | None = None,
    on_stop: Callable[[], None] = lambda: None,
    role: str = "all",
) -> FastAPI:
    """The service over ``settings``' data directory. ``run_job`` runs a job's command (handed in by the command
    line, whose commands they are): with it the server runs jobs and its schedule; ``control_token`` is what
    the command line of the same machine presents to hand it a command (``omnithread.cli.forward``); ``on_stop``
    runs as it stops, after the last job and connection.

    ``role`` ``collector``: a collector process of its own, beside the server that owns the log: only the
    collector's endpoints (and health, readiness, metrics), each request staged here and appended to the
    broker (``settings.broker``), answered once the broker holds it; no engine is opened."""
    if role not in ROLES:
        raise ConfigError("role", role, f"one of {', '.join(ROLES)}")
    full = role == "all"
    service: Service | CollectorService = Service(settings, run_job) if full else CollectorService(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        service.start()
        service.ready = True
        yield
        service.ready = False
        try:
            await run_in_threadpool(service.close)  # the key store's open counts of refusals are written as it closes
        finally:
            on_stop()

    app = FastAPI(
        title="omnithread",
        version="1",
        description=__doc__.split("\n\n")[0],
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    _mount_docs(app)
    app.state.service = service

    def admit(key: ApiKey | None, action: str, roles: tuple[str, ...], body_pending: bool = False) -> ApiKey:
        """The key, if it may do ``action`` (a role of ``roles``, or admin) within its rate; else the refusal,
        counted in the audit log. ``body_pending``: the body is not read yet, so the connection is closed."""
        close = {"Connection": "close"} if body_pending else {}
        if key is None:
            service.keys.refused(None, action, "refused: no valid key")
            raise HTTPException(
                401,
                detail={
                    "code": "unauthorised",
                    "message": "a valid API key is required (the HTTP Basic user name, as Segment's clients send it)",
                },
                headers={"WWW-Authenticate": 'Basic realm="omnithread"', **close},
            )
        if key.role not in roles and key.role != "admin":
            service.keys.refused(key, action, f"refused: needs {roles[0]}")
            raise HTTPException(
                403,
                detail={"code": "forbidden", "message": f"a {key.role} key cannot do this; it needs a {roles[0]} key"},
                headers=close,
            )
        if not service.keys.allow(key):
            service.keys.refused(key, action, "refused: rate limited")
            raise HTTPException(
                429,
                detail={"code": "rate_limited", "message": f"key {key.key_id} is over its rate limit"},
                headers={"Retry-After": "1"},
            )
        return key

    def authorised(role: str):
        def check(request: Request) -> ApiKey:
            action = _action(request)
            refuse_cross_site(request, action)
            return admit(service.keys.check(_basic_user(request) or request.headers.get("x-api-key")), action, (role,))

        return check

    def refuse_cross_site(request: Request, action: str) -> None:
        """What a page of another site can make a browser send, with the credentials the browser holds, is
        refused on the read, admin and reference API (the collector takes what Segment's clients send):
        a request another site started (``Sec-Fetch-Site``), other than following a link, and a request
        whose ``Origin`` is not this server's."""
        site = request.headers.get("sec-fetch-site", "")
        navigation = request.method == "GET" and request.headers.get("sec-fetch-mode", "") == "navigate"
        origin = request.headers.get("origin")
        if (site in ("cross-site", "same-site") and not navigation) or (
            origin is not None and origin != _own_origin(request)
        ):
            service.keys.refused(None, action, "refused: cross-site request")
            raise HTTPException(
                403,
                detail={
                    "code": "cross_site",
                    "message": "requests started by another site "
                    "are refused here; call the API from a client, not a web page",
                },
            )

    def json_body_only(request: Request) -> None:
        """Admin and reference bodies must say they are JSON: a browser cannot send that type to another
        site without asking it first (a CORS preflight, which this server never grants)."""
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            raise HTTPException(
                415,
                detail={
                    "code": "unsupported_media_type",
                    "message": f"Content-Type {kind or 'none'!r} is not accepted here; send application/json",
                },
            )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = (
            exc.detail
            if isinstance(exc.detail, dict)
            else {
                "code": {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error"),
                "message": f"{exc.detail}: {request.method} {request.url.path}",
            }
        )
        return JSONResponse({"success": False, **detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_parameters(request: Request, exc: RequestValidationError):
        problems = [
            {"field": ".".join(str(x) for x in e.get("loc", ())), "message": e.get("msg", "")} for e in exc.errors()
        ]
        return JSONResponse(
            {
                "success": False,
                "code": "invalid_parameters",
                "message": "; ".join(f"{p['field']}: {p['message']}" for p in problems),
                "problems": problems,
            },
            status_code=400,
        )

    @app.exception_handler(OmnithreadError)
    async def _domain_error(request: Request, exc: OmnithreadError):
        exc = unavailable(exc)  # type: ignore[assignment]  # (a storage failure becomes the 503 it is)
        status = exc.http_status  # each kind knows its status (omnithread.errors)
        if status < 500 or isinstance(exc, (UnavailableError, ErasureFailedError)):
            return JSONResponse(
                {"success": False, "code": type(exc).__name__, "message": str(exc)},
                status_code=status,
                headers={"Retry-After": "30"} if status == 503 else None,
            )
        return _server_error(request, exc)

    app.add_middleware(_ContainErrors)
    app.add_middleware(RequestTimer, metrics=service.metrics)
    app.add_middleware(_SecurityHeaders)

    async def _body(request: Request) -> bytes:
        """The request body, refused past ``MAX_BODY`` before it is read when its length is declared, and as
        soon as it passes it when not (chunked): no request costs more memory than the limit."""
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise HTTPException(
                    400,
                    detail={"code": "invalid_content_length", "message": "Content-Length must be a number of bytes"},
                )
            if int(declared) > MAX_BODY:
                raise HTTPException(
                    413,
                    detail={
                        "code": "body_too_large",
                        "message": f"the body is {declared} bytes; the limit is {MAX_BODY}",
                    },
                    headers={"Connection": "close"},
                )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise HTTPException(
                    413,
                    detail={"code": "body_too_large", "message": f"the body is more than {MAX_BODY} bytes, the limit"},
                    headers={"Connection": "close"},
                )
            chunks.append(chunk)
        raw = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "").lower()
        if encoding == "gzip":
            try:
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                raw = d.decompress(raw, MAX_BODY + 1)
            except zlib.error as exc:
                raise HTTPException(
                    400, detail={"code": "invalid_gzip", "message": f"the body is not gzip: {exc}"}
                ) from None
            if len(raw) > MAX_BODY:
                raise HTTPException(
                    413, detail={"code": "body_too_large", "message": f"the body unzips to more than {MAX_BODY} bytes"}
                )
        elif encoding not in ("", "identity"):
            raise HTTPException(
                415,
                detail={
                    "code": "unsupported_encoding",
                    "message": f"Content-Encoding {encoding!r} is not supported; use gzip",
                },
            )
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
        if service.corrupt:  # nothing is acknowledged into a file that cannot be read back
            raise UnavailableError(service.corrupt)
        received = datetime.now(UTC)
        source = f"http:{key.key_id}:{received.isoformat()}"
        # validation needs no lock: it writes nothing
        staged = service.ingestor(received).stage(payload, raw, source)
        # committed before the answer: nothing acknowledged is lost
        stored, suppressed = service.commit(staged.rows, staged.rejected)
        accepted = len(stored)
        duplicates = len(staged.rows) - accepted - len(suppressed) + staged.duplicates
        service.metrics.collected(
            accepted,
            duplicates,
            [row.reason_codes for row in staged.rejected],
            len(suppressed),
            queued=isinstance(service, CollectorService),
        )
        body: dict[str, object] = {"success": True, "accepted": accepted, "duplicates": duplicates}
        if suppressed:  # they name an identifier an erasure suppressed: refused, and said so
            body["suppressed"] = len(suppressed)
        if staged.rejected:
            body["rejected"] = [
                {"index": index, "reasons": [x.get("message", x) for x in orjson.loads(row.reasons)]}
                for index, row in zip(staged.rejected_at, staged.rejected)
            ]
            if accepted == 0 and duplicates == 0 and not suppressed:
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
        """The write key and the body. A key in the headers is checked before a byte of the body is read;
        only a body that may carry its key (``writeKey``, as some Segment clients send it) is read first,
        and never past the limit."""
        action = _action(request)
        presented = _basic_user(request) or request.headers.get("x-api-key")
        raw = None
        if presented is None:
            raw = await _body(request)
            presented = _write_key_from_body(raw)
        key = admit(service.keys.check(presented), action, ("write",), body_pending=raw is None)
        return key, raw if raw is not None else await _body(request)

    call_properties: dict = {
        "type": {"type": "string", "enum": list(CALLS)},
        "messageId": {"type": "string"},
        "userId": {"type": "string"},
        "anonymousId": {"type": "string"},
        "event": {"type": "string"},
        "name": {"type": "string"},
        "previousId": {"type": "string"},
        "groupId": {"type": "string"},
        "properties": {"type": "object"},
        "traits": {"type": "object"},
        "context": {"type": "object"},
        "timestamp": {"type": "string", "format": "date-time"},
        "originalTimestamp": {"type": "string", "format": "date-time"},
        "sentAt": {"type": "string", "format": "date-time"},
    }
    call_schema = {
        "type": "object",
        "additionalProperties": True,
        "description": "A Segment call; see docs/events.md for every event, field and type.",
        "properties": call_properties,
    }
    batch_schema = {
        "type": "object",
        "required": ["batch"],
        "additionalProperties": True,
        "properties": {
            "batch": {"type": "array", "items": call_schema},
            "sentAt": {"type": "string", "format": "date-time"},
            "context": {"type": "object"},
            "writeKey": {"type": "string"},
        },
    }

    def _body_doc(schema: dict) -> dict:
        return {
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {
                "200": {"description": "stored (see accepted, duplicates, rejected)"},
                "400": {"description": "nothing accepted: the reasons are in the answer"},
                "401": {"description": "no valid write key"},
                "403": {"description": "not a write key"},
                "413": {"description": "body too large"},
            },
        }

    def _write_endpoint(handle, what: str, browsers: bool = True):
        """An endpoint that checks the write key, then runs ``handle(raw, what, key)`` off the event loop.
        With ``browsers`` false it refuses what a page of another site can send (the reference endpoints;
        the collector takes what Segment's clients send, ``text/plain`` beacons included)."""

        async def endpoint(request: Request):
            if not browsers:
                refuse_cross_site(request, _action(request))
                json_body_only(request)
            key, raw = await _authorised_write(request)
            return await run_in_threadpool(handle, raw, what, key)

        endpoint.__name__ = f"send_{what}"
        return endpoint

    for call in CALLS:
        app.add_api_route(
            f"/v1/{call}",
            _write_endpoint(_collect, call),
            methods=["POST"],
            tags=["collector"],
            summary=f"Send one {call} call (Segment HTTP Tracking API)",
            openapi_extra=_body_doc(
                {**call_schema, "properties": {**call_properties, "type": {"type": "string", "enum": [call]}}}
            ),
        )

    @app.post(
        "/v1/batch",
        tags=["collector"],
        summary="Send a batch of calls (Segment HTTP Tracking API)",
        openapi_extra=_body_doc(batch_schema),
    )
    async def batch(request: Request):
        key, raw = await _authorised_write(request)
        return await run_in_threadpool(_collect, raw, None, key)

    app.add_api_route(
        "/v1/import",
        batch,
        methods=["POST"],
        tags=["collector"],
        summary="Alias of /v1/batch",
        openapi_extra=_body_doc(batch_schema),
    )

    if full:  # the log's own server; a collector process (role collector) has only the collector
        assert isinstance(service, Service)
        core = service
        # ------------------------------------------------------------------ reference data: catalogue, stock

        def _reference(raw: bytes, kind: str, key: ApiKey) -> JSONResponse:
            payload = _json_object(raw)
            rows = payload.get("rows")
            if not isinstance(rows, list):
                return _problem(400, "missing_field", f"/v1/{kind} needs a 'rows' array of {kind} rows")
            received = datetime.now(UTC)
            source = f"http:{key.key_id}:{received.isoformat()}"
            with core.lock:
                ingestor = core.ws.ingestor(received_at=received)
                # written before the answer, refused rows kept with their reasons
                refused = [
                    {"index": i, "reasons": reasons}
                    for i, reasons in ingestor.import_reference_rows(kind, rows, source)
                ]
                core.stock_changed()  # the next answer reads the new stock
            report = ingestor.report
            body: dict[str, object] = {
                "success": not refused or report.accepted + report.duplicates > 0,
                "accepted": report.accepted,
                "unchanged": report.duplicates,
            }
            if refused:
                body["rejected"] = refused
            return JSONResponse(body, status_code=200 if body["success"] else 400)

        _json_types = {"text": "string", "number": "number", "boolean": "boolean", "time": "string"}
        for kind, summary in (
            ("catalogue", "Products: a row replaces its product's (name, category, price, available, launched_at)"),
            (
                "inventory",
                "Stock per store (or 'online'): units in stock as of a time; an older count never replaces a newer one",
            ),
        ):
            row_schema = {
                "type": "object",
                "properties": {c: {"type": _json_types[t]} for c, t in REFERENCE_COLUMNS[kind].items()},
            }
            app.add_api_route(
                f"/v1/{kind}",
                _write_endpoint(_reference, kind, browsers=False),
                methods=["POST"],
                tags=["reference"],
                summary=summary,
                openapi_extra=_body_doc(
                    {
                        "type": "object",
                        "required": ["rows"],
                        "properties": {"rows": {"type": "array", "items": row_schema}},
                    }
                ),
            )

        # ------------------------------------------------------------------ read API

        @app.get("/v1/persons/{key}", tags=["read"], summary="A person: profile, identities and activity")
        def person(key: str, who: ApiKey = Depends(authorised("read"))):

            with core.reading() as ws:
                try:
                    person_id = find_person(ws.engine, key, ws.pseudonymiser)
                except OmnithreadError:
                    core.keys.audit(who, "read person", None, "not found")
                    raise
                described = describe_person(ws.engine, person_id)
                try:
                    profile = get_profile(ws.engine, person_id)
                except Exception:  # noqa: BLE001 - no profiles built yet
                    profile = None
            core.keys.audit(who, "read person", core.fingerprint(person_id), "ok")
            return _jsonable({"person_id": person_id, "profile": profile, **described})

        @app.get("/v1/recommendations", tags=["read"], summary="Recommendations on any surface")
        def recommendations(
            person: str | None = None,
            surface: str = "for_you",
            store: str | None = None,
            product: str | None = None,
            basket: str | None = None,
            n: int = Query(10, ge=1, le=500),
            who: ApiKey = Depends(authorised("read")),
        ):
            with core.reading():
                answer = core.recommendations().recommend(
                    person, surface, n=n, store=store, product=product, basket=basket.split(",") if basket else None
                )
            core.keys.audit(
                who,
                f"recommendations {surface}",
                core.fingerprint(answer.person_id) if answer.person_id else None,
                "ok",
            )
            return answer.as_dict()

        @app.get(
            "/v1/analytics/{view}",
            tags=["analytics"],
            summary="A view of the understand stage: stores, hourly, shelves, plates, journeys, revenue, cohorts, "
            "rfm, lifetime",
        )
        def analytics(
            view: str,
            store: str | None = None,
            days: int = Query(14, ge=1, le=365),
            who: ApiKey = Depends(authorised("read")),
        ):
            with core.reading() as ws:
                result = analytics_view(ws, view, store=store, days=days, compute=False)
            core.keys.audit(who, f"read analytics {view}", store, "ok")
            return _jsonable(result)

        @app.get("/v1/audiences", tags=["analytics"], summary="Audiences with their rules and member counts")
        def audiences_list(who: ApiKey = Depends(authorised("read"))):
            with core.reading() as ws:
                rows = list_audiences(ws.engine)
            core.keys.audit(who, "read audiences", None, "ok")
            return _jsonable(rows)

        @app.get("/v1/audiences/{name}", tags=["analytics"], summary="One audience and a page of its members")
        def audience_read(
            name: str,
            limit: int = Query(100, ge=1, le=10_000),
            offset: int = Query(0, ge=0),
            who: ApiKey = Depends(authorised("read")),
        ):
            with core.reading() as ws:
                found = audience_members(ws.engine, name, limit, offset)
            core.keys.audit(who, "read audience", name, "ok")
            return _jsonable(found)

        @app.get("/v1/stores/{store_id}/receipts", tags=["read"], summary="A store's receipts and visits")
        def receipts(store_id: str, limit: int = Query(50, ge=1, le=1000), who: ApiKey = Depends(authorised("read"))):
            with core.read_lock:
                rows = core.reader.log.store_receipts(store_id, limit)
            core.keys.audit(who, "read store receipts", store_id, "ok")
            return _jsonable({"store_id": store_id, "events": rows})

        @app.get(
            "/v1/stores/{store_id}/inventory",
            tags=["read"],
            summary="A location's stock as imported (a store id, or 'online'), with each product's catalogue state",
        )
        def inventory(
            store_id: str,
            product: str | None = None,
            limit: int = Query(1000, ge=1, le=100_000),
            who: ApiKey = Depends(authorised("read")),
        ):
            with core.read_lock:
                rows = location_stock(core.reader.engine, store_id, product, limit)
            core.keys.audit(who, "read inventory", store_id, "ok")
            if not rows and not product:
                raise HTTPException(
                    404,
                    detail={
                        "code": "not_found",
                        "message": f"no inventory imported for {store_id!r}: "
                        "recommendations there infer stock from recent sales",
                    },
                )
            return _jsonable({"store_id": store_id, "products": rows})

        # ------------------------------------------------------------------ admin: consent, erasure, audit

        @app.post("/v1/admin/consent", tags=["admin"], summary="Record a person's consent per purpose")
        async def consent(request: Request, who: ApiKey = Depends(authorised("admin")), _=Depends(json_body_only)):

            body = _json_object(await _body(request))

            def record() -> dict:
                with core.work_lock:
                    return record_consent(
                        core.worker,
                        str(body.get("person", "")),
                        body.get("purposes") or {},
                        str(body.get("source") or "api"),
                    )

            result = await run_in_threadpool(record)  # (off the event loop, which goes on answering the collector)
            await run_in_threadpool(core.changed)  # written outside the collector: it reads its suppression again
            core.keys.audit(
                who,
                "record consent",
                core.fingerprint(result["person_id"]),
                "ok",
                orjson.dumps(result["purposes"]).decode(),
            )
            return result

        @app.post(
            "/v1/admin/erasure",
            tags=["admin"],
            summary="Erase a person: suppress, suppress_and_delete or delete (Segment's regulation types)",
        )
        async def erasure(request: Request, who: ApiKey = Depends(authorised("admin")), _=Depends(json_body_only)):

            body = _json_object(await _body(request))
            key, mode, raw_values = check_request(
                body.get("person"), body.get("mode", "suppress_and_delete"), body.get("raw_values", ())
            )

            def run() -> ErasureReport:
                try:
                    with core.work_lock:
                        return erase(core.worker, key, mode, raw_values)
                finally:
                    core.changed(model=True)  # the (retrained) model swapped in; suppression read again
                    core.erased()

            try:
                # off the event loop: an erasure takes seconds, and the loop goes on answering the collector
                report = await run_in_threadpool(run)
            except OmnithreadError as exc:
                core.keys.audit(
                    who,
                    f"erasure {mode}",
                    core.ws.pseudonymiser.fingerprint(f"erasure:{key}".encode()),
                    f"failed: {type(exc).__name__}",
                )
                raise
            core.keys.audit(
                who,
                f"erasure {mode}",
                report.request_id,
                "done",
                f"events {report.events_deleted}, rejected {report.rejected_deleted}",
            )
            return report.as_dict()

        @app.get("/v1/admin/audit", tags=["admin"], summary="The newest audit log entries")
        def audit(limit: int = Query(100, ge=1, le=10_000), who: ApiKey = Depends(authorised("admin"))):
            entries = core.keys.audit_entries(limit)
            core.keys.audit(who, "read audit log", None, "ok")
            return {"entries": entries}

        # ------------------------------------------------------------------ jobs

        def controller(request: Request) -> bool:
            """Whether the request comes from the command line of this machine (it presents the run's token)."""
            presented = request.headers.get(CONTROL_HEADER, "")
            return control_token is not None and hmac.compare_digest(presented.encode(), control_token.encode())

        def job_reader(request: Request) -> None:
            if not controller(request):
                authorised("admin")(request)

        @app.post("/v1/jobs", tags=["jobs"], summary="Hand the server a command of the command line, as a job")
        async def submit_job(request: Request):
            if not controller(request):
                raise HTTPException(403, detail={"code": "forbidden", "message": "only the command line submits jobs"})
            if core.job_worker is None:
                raise HTTPException(503, detail={"code": "unavailable", "message": "this server runs no jobs"})
            body = _json_object(await _body(request))
            argv = body.get("argv")
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise InvalidRequestError("argv", argv, "a list of the command's words")
            names = body.get("command")
            if not isinstance(names, list) or not names or argv[: len(names)] != names:
                raise InvalidRequestError("command", names, "the names of the command argv starts with")
            job = core.jobs.submit(" ".join(names), argv, "cli", _columns(body.get("columns")))
            core.job_worker.wake()
            return JSONResponse(job.as_dict(), status_code=202)

        @app.get("/v1/jobs", tags=["jobs"], summary="Jobs: running, queued, done and failed, newest first")
        def list_jobs(request: Request, state: str | None = None, limit: int = Query(50, ge=1, le=1000)):
            job_reader(request)
            states = JOB_STATES if state is None else tuple(state.split(","))
            if not set(states) <= set(JOB_STATES):
                raise InvalidRequestError("state", state, f"states among {', '.join(JOB_STATES)}")
            return {"jobs": [job.as_dict(output=False) for job in core.jobs.list(states, limit)]}

        @app.get("/v1/jobs/{job_id}", tags=["jobs"], summary="One job, with what it printed")
        def get_job(job_id: str, request: Request):
            """What a job printed goes back whole to the command line that handed it in; an admin key reads it
            through the personal-data rule (a person the command named shows as its keyed hash)."""
            if controller(request):
                return core.jobs.get(job_id).as_dict()
            authorised("admin")(request)
            shown = core.jobs.get(job_id).as_dict()
            rule = personal_data_rule(core.ws.pseudonymiser, core.ws.cipher)
            for name in ("stdout", "stderr"):
                if shown[name]:
                    shown[name] = rule.text(shown[name])
            return shown

    # ------------------------------------------------------------------ operating: metrics, readiness

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics: events, refusals, jobs, request latencies")
    def metrics():
        return Response(service.metrics.render(service), media_type=METRICS_CONTENT_TYPE)

    @app.get(
        "/ready",
        tags=["service"],
        summary="Ready for traffic: started, the log readable and no storage problem (liveness: /health)",
    )
    def ready():
        reasons = [] if service.ready else ["starting or stopping"]
        reasons += service.health()
        if reasons:
            return JSONResponse({"ready": False, "reasons": reasons}, status_code=503)
        return {"ready": True}

    if isinstance(service, Service):
        mount(app, service, authorised)

    @app.get(
        "/health",
        tags=["service"],
        summary="Is the service healthy, and how many events does it hold",
        responses={
            503: {
                "description": "degraded: the reasons say why (disk nearly full, writes failing, "
                "a corrupt database file)"
            }
        },
    )
    def health():
        reasons = service.health()
        if isinstance(service, CollectorService):
            body = {"ok": not reasons, "status": "degraded" if reasons else "ok", "role": "collector"}
            return JSONResponse(
                {**body, "reasons": reasons, "queued": service.queued}, status_code=503 if reasons else 200
            )
        try:
            with service.read_lock:
                count = service.reader.log.count()
        except Exception as exc:  # noqa: BLE001 - a health check reports, it does not fail
            service.note_failure(exc)
            reasons = service.health() or [f"the event log cannot be read ({type(exc).__name__})"]
            count = None
        broker = service.loader.status() if service.loader is not None else None
        if reasons:
            return JSONResponse(
                {"ok": False, "status": "degraded", "reasons": reasons, "events": count, "broker": broker},
                status_code=503,
            )
        return {"ok": True, "status": "ok", "events": count, **({"broker": broker} if broker else {})}

    return app


def _mount_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI served from an installed package's own copy (fastapi-offline's), nothing from another
    site."""
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs/static", StaticFiles(directory=assets), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="omnithread API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon.png",
        )


def _json_object(raw: bytes) -> dict:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, detail={"code": "invalid_json", "message": f"the body is not JSON: {exc}"}) from None
    if not isinstance(body, dict):
        raise HTTPException(
            400,
            detail={"code": "not_an_object", "message": f"the body must be a JSON object, not {type(body).__name__}"},
        )
    return body


def _server_error(request, exc: BaseException) -> JSONResponse:
    """A failure of the server's own: logged with a reference and a message that masks every value, answered
    with the reference only (no statement, no value, no secret)."""
    reference = uuid.uuid4().hex[:12]
    _log.error("%s %s failed (reference %s): %s", request.method, _action(request), reference, safe_message(exc))
    return JSONResponse(
        {
            "success": False,
            "code": "internal_error",
            "reference": reference,
            "message": f"the server could not do this ({type(exc).__name__}); its log says more under "
            f"reference {reference}",
        },
        status_code=500,
    )


class _ContainErrors:
    """Any exception a handler did not expect becomes :func:`_server_error`'s answer, so neither the answer
    nor the server's log shows a traceback, a statement or a value."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - contained: answered and logged safely
            if started:
                _log.error("a response failed part-way: %s", safe_message(exc))
                return
            await _server_error(Request(scope), exc)(scope, receive, send)


_COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_CSP = {
    "/dashboard": b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'",
    "/docs": b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
}


class _SecurityHeaders:
    """Every answer: no sniffing, no framing, no referrer; pages with a policy of what they may load (nothing
    from another site); nothing cached but the API's own documentation assets."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        extra = list(_COMMON_HEADERS)
        policy = next(
            (v for prefix, v in _CSP.items() if path.startswith(prefix)), b"default-src 'none'; frame-ancestors 'none'"
        )
        extra.append((b"content-security-policy", policy))
        if not path.startswith("/docs/static"):
            extra.append((b"cache-control", b"no-store"))

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


def _action(request: Request) -> str:
    """What a request does, for the audit log: its method and route template (``GET /v1/persons/{key}``),
    never its path, which may hold an email or a phone number."""
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', None) or '(no route)'}"


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def _jsonable(value):
    return orjson.loads(orjson.dumps(value, default=str))
