"""Import: every source goes through one path into the log.

A payload is pseudonymised first (so nothing raw is ever kept, accepted or
not), then validated; a valid event becomes a row of the log, an invalid one a
row of ``rejected_events`` with every reason. Rows are written in chunks, each
deduplicated against the log on ``messageId``, so memory stays flat and
importing the same input twice stores nothing new.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

import orjson

from omnithread.config import Settings
from omnithread.engine.log import EventLog
from omnithread.engine.tables import EventRow, RejectedRow
from omnithread.errors import InvalidRequestError, Problem
from omnithread.events.schema import IDENTIFIER_CODES, MAX_BATCH_BYTES, MAX_DEPTH, MAX_EVENT_BYTES, TOP_LEVEL_KEYS
from omnithread.events.validate import TimePolicy, nesting_depth, validate_event
from omnithread.ingest import reference
from omnithread.ingest.bulk import (
    PERSONAL_DATA_FUNCTION,
    FastPathSQL,
    chunk_table,
    hash_function,
    line_chunks,
)
from omnithread.ingest.till import TillOrders, check_till_row, missing_columns, order_event
from omnithread.privacy import (
    IdentifierError,
    IdentifierType,
    PayloadCipher,
    Pseudonymiser,
    personal_data_rule,
    pseudonymise_payload,
    reveal_encrypted_values,
)
from omnithread.privacy.detect import screen_hits

__all__ = ["Ingestor", "IngestReport", "FileReport", "Staged"]

UTC = timezone.utc
_TOP_LEVEL = frozenset(TOP_LEVEL_KEYS)
_NOT_CONTENT = ("messageId", "sentAt", "receivedAt")
Progress = Callable[[int], None]


@dataclass
class FileReport:
    """What became of one source."""

    source: str
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    suppressed: int = 0

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "suppressed": self.suppressed,
        }


@dataclass(frozen=True, slots=True)
class Staged:
    """What :meth:`Ingestor.stage` made of a request: rows to store, rejections to keep (``rejected_at`` is
    each one's index in its batch), and calls that repeated a message id of the same request."""

    rows: list[EventRow]
    rejected: list[RejectedRow]
    rejected_at: list[int]
    duplicates: int


@dataclass
class IngestReport:
    """Counts of an import: stored, duplicates of what the log had, rejected by reason."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    suppressed: int = 0  # refused at the door: they name an identifier an erasure suppressed
    rejected_stored: int = 0
    by_reason: Counter = field(default_factory=Counter)
    files: list[FileReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def received(self) -> int:
        return self.accepted + self.duplicates + self.rejected + self.suppressed

    def as_dict(self) -> dict:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "suppressed": self.suppressed,
            "rejected_stored": self.rejected_stored,
            "rejected_by_reason": dict(self.by_reason.most_common()),
            "files": [f.as_dict() for f in self.files],
            "seconds": round(self.seconds, 3),
        }


def _dumps(value) -> str | None:
    return orjson.dumps(value).decode() if value else None


class Ingestor:
    """Validates, pseudonymises and stores payloads from any source.

    One ingestor serves one import (a CLI call, an HTTP request, a replay);
    ``received_at`` is set by a live collector to its receive time, and left
    ``None`` for files, whose own ``receivedAt`` fields are used when present.
    """

    def __init__(
        self,
        log: EventLog | None,
        pseudonymiser: Pseudonymiser,
        cipher: PayloadCipher,
        settings: Settings,
        received_at: datetime | None = None,
    ):
        self._log = log
        self.pseudonymiser = pseudonymiser
        self.cipher = cipher
        self.settings = settings
        self.received_at = received_at
        self.policy = TimePolicy(max_ahead=settings.max_future)
        self.now = datetime.now(UTC)
        self.report = IngestReport()
        self._file = FileReport("")
        self._pending: dict[str, EventRow] = {}
        self._pending_duplicates = 0
        self._rejected: dict[str, RejectedRow] = {}
        self.last_rejected_id: str | None = None
        self._fast: FastPathSQL | None = None
        self._reference: dict[str, list[dict]] = {}  # checked catalogue and inventory rows, not yet written
        self._clean = self._shallow = False  # what the screen of the text being submitted found (see _submit_parsed)
        self._line: int | None = None  # the file line being submitted, when the fast path hands one over
        self._hold = False  # while staging for the collector: nothing is written, however much is staged
        self._position: int | None = None  # the batch index or row line of what is being submitted
        self._positions: dict[str, int | None] = {}  # rejected id -> its position
        self._line_of: dict[str, int] = {}  # message id -> that line, for the rows staged from it

    @property
    def log(self) -> EventLog:
        if self._log is None:  # a collector process: it stages, the log's process stores
            raise RuntimeError("this ingestor has no log: it can only stage")
        return self._log

    # -- sources ------------------------------------------------------------------
    def ingest_paths(self, paths: Iterable[Path | str], progress: Progress | None = None) -> IngestReport:
        """Import every path (JSONL, JSON, till CSV, Parquet); one report for all."""
        started = datetime.now(UTC)
        for path in paths:
            self.ingest_file(Path(path), progress)
        self.report.seconds = (datetime.now(UTC) - started).total_seconds()
        return self.report

    def ingest_file(self, path: Path, progress: Progress | None = None) -> FileReport:
        self.begin(str(path))
        if not self.refuse_unreadable(path, "file", {"path": str(path)}):
            suffix = path.suffix.lower()
            reader = {".csv": self._read_till_csv, ".parquet": self._read_parquet, ".json": self._read_json}.get(
                suffix, self._read_jsonl
            )
            reader(path, progress or (lambda n: None))
        return self._end()

    def begin(self, source: str) -> None:
        """Start counting a new source in the report."""
        self._file = FileReport(source)
        self.report.files.append(self._file)

    def _end(self) -> FileReport:
        self.flush()
        return self._file

    def _read_jsonl(self, path: Path, progress: Progress) -> None:
        if self.settings.fast_path and self.log.engine.has_fast_path:
            self._read_jsonl_fast(path, progress)
        else:
            self._read_jsonl_lines(path, progress)

    def _fast_sql(self) -> FastPathSQL:
        if self._fast is None:
            self._fast = FastPathSQL(
                self.policy.max_ahead.total_seconds(), self.policy.earliest, self.pseudonymiser.ip_mode
            )
        return self._fast

    def _hash_or_none(self, kind: IdentifierType, value: str) -> str | None:
        """The keyed hash of an identifier (the pseudonymiser's, which caches), or None where it is not a valid
        one: what the fast path calls for each identifier it stores."""
        try:
            return self.pseudonymiser.hash(kind, value)
        except IdentifierError:
            return None

    def _read_jsonl_fast(self, path: Path, progress: Progress) -> None:
        """Chunks of lines to the engine; what it cannot vouch for, line by line here."""
        source = str(path)
        fast = self._fast_sql()
        params = {"now": self.now, "source_prefix": f"{source}:"}
        functions: dict = {
            hash_function(kind): partial(self._hash_or_none, IdentifierType(kind)) for kind in IDENTIFIER_CODES
        }
        functions[PERSONAL_DATA_FUNCTION] = personal_data_rule(self.pseudonymiser, self.cipher).json_text
        done = 0
        with open(path, "rb") as handle:
            for first_line, data in line_chunks(handle, self.settings.import_chunk_bytes):
                table, offsets = chunk_table(first_line, data)
                self.flush()
                rest = self.log.engine.stage_events_fast(table, fast.sql, params, functions)
                for line_no in rest:
                    i = line_no - first_line
                    line = bytes(data[offsets[i] : offsets[i + 1]])
                    if line.strip():
                        self._line = line_no
                        self.submit_line(line, f"{source}:{line_no}", flush=False)
                self._line = None
                # Both paths' rows go in together so the earliest line wins a shared message id.
                rows = list(self._pending.values())
                lines = [self._line_of.pop(r.message_id) for r in rows]
                refused = self.log.refused_suppressed
                stored, offered = self.log.append_with_staged(rows, lines)
                refused = self.log.refused_suppressed - refused
                self._count(stored, offered - stored + self._pending_duplicates, refused)
                self._pending.clear()
                self._pending_duplicates = 0
                self._flush_rejected()
                done += len(data)
                progress(done)

    def _read_jsonl_lines(self, path: Path, progress: Progress) -> None:
        source = str(path)
        done = 0
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                done += len(line)
                if not line.strip():
                    continue
                self.submit_line(line, f"{source}:{number}")
                if number % 20_000 == 0:
                    progress(done)
        progress(done)

    def _read_json(self, path: Path, progress: Progress) -> None:
        raw = path.read_bytes()
        source = str(path)
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            # Not one JSON document: perhaps JSON Lines under a .json name.
            self._read_jsonl(path, progress)
            return
        if isinstance(document, list):
            for index, item in enumerate(document):
                self._submit_parsed(item, None, f"{source}#{index}")
        else:
            self._submit_parsed(document, raw, source)
        progress(len(raw))

    def _read_parquet(self, path: Path, progress: Progress) -> None:
        import pyarrow.parquet as pq

        source = str(path)
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        till = not missing_columns(names)
        orders = TillOrders()  # (used only when the file is a till export)
        row_number = 0
        for batch in parquet.iter_batches(batch_size=self.settings.chunk_rows):
            for row in batch.to_pylist():
                row_number += 1
                if till:
                    row = {
                        k: ("" if v is None else (v.isoformat() if isinstance(v, datetime) else str(v)))
                        for k, v in row.items()
                    }
                    for order in orders.add(row, row_number):
                        self.submit_till_order(order, source)
                else:
                    self.submit_payload(_event_from_row(row), f"{source}:{row_number}")
            progress(row_number)
        if till:
            for order in orders.close():
                self.submit_till_order(order, source)

    def _read_till_csv(self, path: Path, progress: Progress) -> None:
        source = str(path)
        with open(path, "rb") as raw_handle:
            # utf-8-sig: a byte-order mark (spreadsheet exports) would otherwise rename the first column
            handle = io.TextIOWrapper(raw_handle, encoding="utf-8-sig", errors="surrogateescape", newline="")
            reader = csv.DictReader(handle)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            missing = missing_columns(header)
            orders = TillOrders()
            for row in reader:
                line = reader.line_num
                row = {k: v for k, v in row.items() if k is not None}
                if missing:
                    problems = [
                        Problem(
                            "missing_column", column, "", f"{path.name}: column {column!r} is missing from the header"
                        )
                        for column in missing
                    ]
                    self._reject_till([(line, row)], source, problems)
                    continue
                for order in orders.add(row, line):
                    self.submit_till_order(order, source)
                if line % 20_000 == 0:
                    progress(raw_handle.tell())
            for order in orders.close():
                self.submit_till_order(order, source)
            progress(path.stat().st_size)

    # -- reference data -----------------------------------------------------------
    def ingest_reference(self, paths: Iterable[Path | str], kind: str) -> IngestReport:
        """Import catalogue or inventory files (``kind``; see :mod:`omnithread.ingest.reference`): each
        row checked, stored or kept with its reasons; one report for all."""
        if kind not in reference.KINDS:
            raise InvalidRequestError("kind", kind, " or ".join(reference.KINDS))
        started = datetime.now(UTC)
        for path in map(Path, paths):
            self.begin(str(path))
            if not self.refuse_unreadable(path, f"{kind}_file", {"path": str(path), "kind": kind}):
                for line, row, text in reference.read_rows(path):
                    if row is None:
                        self.reject_reference_text(kind, line, text, str(path))
                    else:
                        self.submit_reference_row(kind, line, row, str(path))
            self._end()
        self.report.seconds = (datetime.now(UTC) - started).total_seconds()
        return self.report

    def reject_reference_text(self, kind: str, line: int, text: str | None, source: str) -> None:
        """Keep a line of a JSON Lines catalogue or inventory that is not a JSON object."""
        self._reject(
            {"kind": kind, "line": line, "text": text},
            f"{kind}_row",
            f"{source}:{line}",
            [Problem("not_an_object", "", f"line {line}", f"line {line}: not a JSON object: {show_text(text)}")],
        )

    def import_reference_rows(self, kind: str, rows: list, source: str) -> list[tuple[int, list[str]]]:
        """Catalogue or inventory rows sent whole (the API's body): each checked, stored or kept with its
        reasons, written before this returns. Returns the refused rows as (index, reasons)."""
        self.begin(source)
        before = set(self._rejected)
        for line, row in enumerate(rows, start=1):
            self._position = line - 1
            if isinstance(row, dict):
                self.submit_reference_row(kind, line, row, source)
            else:
                self.reject_reference_text(kind, line, orjson.dumps(row).decode(), source)
        refused = sorted(
            (self._positions.get(r.rejected_id) or 0, [x["message"] for x in orjson.loads(r.reasons)])
            for r in self._rejected.values()
            if r.rejected_id not in before
        )
        self._position = None
        self.flush()
        return refused

    def stage(self, payload: dict, raw: bytes | None, source: str) -> Staged:
        """Validate and pseudonymise one call or batch (parsed from ``raw``) without writing anything: the
        rows to store, the rejections to keep (with each one's index in the batch), and how many calls were
        duplicates within it. The collector stores them in its group commit."""
        self.begin(source)
        self._hold = True
        try:
            self._submit_parsed(payload, raw, source, flush=False)
        finally:
            self._hold = False
            self._position = None
        rejected = list(self._rejected.values())
        staged = Staged(
            rows=list(self._pending.values()),
            rejected=rejected,
            rejected_at=[self._positions.get(r.rejected_id) or 0 for r in rejected],
            duplicates=self._pending_duplicates,
        )
        self._pending.clear()
        self._rejected.clear()
        self._positions.clear()
        self._pending_duplicates = 0
        return staged

    def submit_reference_row(self, kind: str, line: int, row: dict, source: str) -> None:
        """One catalogue or inventory row: staged to be stored, or kept with every problem it has."""
        clean, problems = reference.check_row(kind, row, line, self.now, self.settings.max_future)
        if clean is not None:  # names and categories are free text: the personal-data rule reads them too
            rule = personal_data_rule(self.pseudonymiser, self.cipher)
            clean = {k: rule.text(v) if isinstance(v, str) else v for k, v in clean.items()}
        if problems:
            self._reject({"kind": kind, "line": line, "row": row}, f"{kind}_row", f"{source}:{line}", problems)
        elif clean is not None:
            self._reference.setdefault(kind, []).append(clean)

    # -- payloads -----------------------------------------------------------------
    def submit_line(self, line: bytes, source: str, flush: bool = True) -> None:
        """One line of JSON Lines: an event or a Segment batch."""
        try:
            payload = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                problem = Problem(
                    "invalid_utf8",
                    "",
                    f"byte {bad.start}",
                    f"{source}: byte {bad.start} is not UTF-8 ({line[bad.start : bad.start + 1]!r})",
                )
            else:
                problem = Problem(
                    "invalid_json", "", f"char {error.pos}", f"{source}: not JSON ({error.msg} at char {error.pos})"
                )
            self._reject_raw(line, source, [problem])
            return
        self._submit_parsed(payload, line, source, flush)

    def _submit_parsed(self, payload: object, raw: bytes | None, source: str, flush: bool = True) -> None:
        if raw is not None and isinstance(payload, dict):
            # The text as it arrived, screened once for a whole batch or line: where the personal-data rule
            # could change nothing (most calls), no call of it is walked, and where it nests no deeper than
            # its brackets allow, none is measured.
            self._clean, self._shallow = _clean_and_shallow(raw)
        try:
            if isinstance(payload, dict) and isinstance(payload.get("batch"), list):
                self.submit_batch(
                    payload, len(raw.rstrip(b"\r\n")) if raw is not None else len(_json_bytes(payload)), source
                )
            elif isinstance(payload, dict):
                self.submit_payload(payload, source, len(raw.rstrip(b"\r\n")) if raw is not None else None, flush)
            else:
                self._not_an_object(payload, raw, source)
        finally:
            self._clean = self._shallow = False

    def _not_an_object(self, payload: object, raw: bytes | None, source: str) -> None:
        shown = type(payload).__name__
        self._reject_raw(
            raw if raw is not None else orjson.dumps(payload),
            source,
            [Problem("not_an_object", "", shown, f"{source}: expected a JSON object, got {shown}")],
        )

    def submit_batch(self, batch: dict, size: int, source: str) -> None:
        """A Segment batch: refused whole past 500 KB, otherwise each call on its own."""
        if size > MAX_BATCH_BYTES:
            batch = _cut_deep(batch, MAX_DEPTH + 1, self.cipher)
            problems = pseudonymise_payload_deep(batch, self.pseudonymiser, self.cipher)
            problems.insert(
                0,
                Problem(
                    "batch_too_large",
                    "batch",
                    f"{size} bytes",
                    f"{source}: the batch is {size} bytes, more than the limit of {MAX_BATCH_BYTES} bytes",
                ),
            )
            self._reject(batch, "segment_batch", source, problems)
            return
        shared_context = batch.get("context") if isinstance(batch.get("context"), dict) else None
        for index, item in enumerate(batch["batch"]):
            item_source = f"{source}#{index}"
            self._position = index
            if not isinstance(item, dict):
                shown = type(item).__name__
                self._reject_raw(
                    _json_bytes(item),
                    item_source,
                    [Problem("not_an_object", "", shown, f"{item_source}: expected a JSON object, got {shown}")],
                )
                continue
            if "sentAt" in batch and "sentAt" not in item:
                item["sentAt"] = batch["sentAt"]
            if shared_context and isinstance(item.get("context", {}), dict):
                item["context"] = {**shared_context, **item.get("context", {})}
            self.submit_payload(item, item_source)

    def submit_payload(self, payload: dict, source: str, size: int | None = None, flush: bool = True) -> None:
        """Validate, pseudonymise and stage one call."""
        depth = 0 if self._shallow or _few_brackets(payload) else nesting_depth(payload, stop=MAX_DEPTH)
        if depth > MAX_DEPTH:  # refused on its own (a batch's other calls go on), what is too deep kept encrypted
            self._reject(
                _cut_deep(payload, MAX_DEPTH, self.cipher),
                "segment",
                source,
                [
                    Problem(
                        "too_deep",
                        "",
                        f"more than {MAX_DEPTH} levels",
                        f"{source}: objects and arrays nest more than {MAX_DEPTH} levels deep, the limit",
                    )
                ],
            )
            return
        problems = [] if self._clean else pseudonymise_payload(payload, self.pseudonymiser, self.cipher)
        if size is None and len(payload) > 0:
            size = len(orjson.dumps(payload))
        if size is not None and size > MAX_EVENT_BYTES:
            problems.append(
                Problem(
                    "event_too_large",
                    "",
                    f"{size} bytes",
                    f"{source}: the event is {size} bytes, more than the limit of {MAX_EVENT_BYTES} bytes",
                )
            )
        checked, found = validate_event(payload, self.now, self.received_at, self.policy)
        problems.extend(found)
        if problems or checked is None:
            self._reject(payload, "segment", source, problems)
            return
        message_id = payload.get("messageId") or self._derived_id(payload, source)
        if message_id in self._pending:
            self._pending_duplicates += 1
            return
        context = payload.get("context")
        consent = context.pop("consent", None) if context else None
        if context and checked.channel is not None:
            context["channel"] = checked.channel
        unknown = payload.keys() - _TOP_LEVEL
        extra = {k: payload[k] for k in payload if k in unknown} if unknown else None
        times = checked.times
        if self._line is not None:
            self._line_of[message_id] = self._line
        # positional, in the order of EventRow's fields (a keyword call costs twice as much, per event)
        self._pending[message_id] = EventRow(
            message_id,  # message_id
            checked.call,  # call
            checked.name,  # event
            checked.user_id,  # user_id
            checked.anonymous_id,  # anonymous_id
            payload.get("previousId"),  # previous_id
            payload.get("groupId"),  # group_id
            checked.channel,  # channel
            checked.store_id,  # store_id
            times.event_at,  # event_at
            times.original_at,  # original_at
            times.sent_at,  # sent_at
            times.received_at,  # received_at
            self.now,  # loaded_at
            checked.schema_version,  # schema_version
            _dumps(payload.get("properties")),  # properties
            _dumps(payload.get("traits")),  # traits
            _dumps(context),  # context
            _dumps(consent),  # consent
            _dumps(extra),  # extra
            source,  # source
        )
        if flush and not self._hold and len(self._pending) >= self.settings.chunk_rows:
            self.flush()

    def _derived_id(self, payload: dict, source: str) -> str:
        """The message id of a call sent without one: a keyed digest of its content and of where it came
        from, so a retried delivery of the same line is stored once while a genuine repeat is not lost.

        Where is a file's line (and batch item) without the file's path, so importing a file again, from
        anywhere, stores nothing new; for the collector it is the moment of receipt, so two identical calls
        are two events, as Segment's own id, generated when a client sends none, makes them. Encrypted values
        count by what they hold (each encryption differs)."""
        content = {k: v for k, v in payload.items() if k not in _NOT_CONTENT}
        body = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
        if b'"enc1:' in body:
            body = orjson.dumps(reveal_encrypted_values(orjson.loads(body), self.cipher), option=orjson.OPT_SORT_KEYS)
        where = source if self.received_at is not None else source.rsplit(":", 1)[-1]
        return "derived-" + self.pseudonymiser.fingerprint(where.encode("utf-8", "surrogatepass") + b"\n" + body)

    def submit_till_order(self, lines: list[tuple[int, dict]], source: str) -> None:
        problems = [p for line, row in lines for p in check_till_row(row, line)]
        problems.extend(
            Problem("invalid_utf8", "", f"line {line}", f"{source}:{line}: the row holds bytes that are not UTF-8")
            for line, row in lines
            if _undecodable(row)
        )
        first_line = lines[0][0]
        if problems:
            self._reject_till(lines, source, problems)
            return
        self.submit_payload(order_event([row for _, row in lines]), f"{source}:{first_line}")

    def take_last_rejected(self) -> RejectedRow:
        """Withdraw the rejection staged last (a replay keeps the original record instead)."""
        assert self.last_rejected_id is not None, "nothing was rejected"
        row = self._rejected.pop(self.last_rejected_id)
        for counts in (self.report, self._file):
            counts.rejected -= 1
        self.report.by_reason.subtract(row.reason_codes)
        self.report.by_reason = +self.report.by_reason  # drop reasons counted down to zero
        return row

    # -- rejection ----------------------------------------------------------------
    def _reject_till(self, lines: list[tuple[int, dict]], source: str, problems: list[Problem]) -> None:
        rows = []
        for _, row in lines:
            if _undecodable(row):
                # Bytes that are not UTF-8 cannot be pseudonymised field by field: encrypt the row.
                as_bytes = {k: v.encode("utf-8", "surrogateescape").hex() for k, v in row.items() if isinstance(v, str)}
                rows.append({"encrypted_row": self.cipher.encrypt_value(as_bytes)})
            else:
                row = dict(row)
                problems.extend(pseudonymise_payload({"properties": row}, self.pseudonymiser, self.cipher))
                rows.append(row)
        self._reject(
            {"rows": rows, "lines": [line for line, _ in lines]}, "till_csv", f"{source}:{lines[0][0]}", problems
        )

    def refuse_unreadable(self, path: Path, fmt: str, payload: dict) -> bool:
        """Stage the refusal of a file that is missing or empty (``fmt`` and ``payload`` say how to try
        it again); False if it can be read."""
        if not path.is_file():
            problem = Problem("not_found", "path", str(path), f"{path}: no such file")
        elif path.stat().st_size == 0:
            problem = Problem("empty_file", "path", str(path), f"{path}: the file is empty")
        else:
            return False
        self._reject(payload, fmt, str(path), [problem])
        return True

    def refused_raw(self, raw: bytes, source: str, problem: Problem) -> RejectedRow:
        """``raw`` (bytes that are not what they should be, kept encrypted) as a rejection with its reason."""
        self._reject_raw(raw, source, [problem])
        return self._rejected.pop(self.last_rejected_id or "")

    def _reject_raw(self, raw: bytes, source: str, problems: list[Problem]) -> None:
        rejected_id = self.pseudonymiser.fingerprint(b"raw:" + raw.rstrip(b"\r\n"))
        self._stage_rejected(rejected_id, source, "raw", problems, None, self.cipher.encrypt(raw.rstrip(b"\r\n")))

    def _reject(self, payload: dict, fmt: str, source: str, problems: list[Problem]) -> None:
        personal_data_rule(self.pseudonymiser, self.cipher).walk(payload)  # whatever door it came through
        body = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
        # Encrypted values differ on every encryption; the id is taken over the plain
        # content so the same bad payload is recognised when it comes again.
        plain = reveal_encrypted_values(orjson.loads(body), self.cipher) if b'"enc1:' in body else None
        fingerprinted = body if plain is None else orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)
        rejected_id = self.pseudonymiser.fingerprint(fmt.encode() + b":" + fingerprinted)
        self._stage_rejected(rejected_id, source, fmt, problems, body.decode(), None)

    def _stage_rejected(self, rejected_id, source, fmt, problems, payload_json, encrypted) -> None:
        # a reason quotes the value it refused: the personal-data rule takes what it holds, as in the payload
        rule = personal_data_rule(self.pseudonymiser, self.cipher)
        problems = [Problem(p.code, p.field, rule.text(p.value), rule.text(p.message)) for p in problems]
        codes = sorted({p.code for p in problems}) or ["unknown"]
        self.report.rejected += 1
        self._file.rejected += 1
        self.report.by_reason.update(codes)
        self.last_rejected_id = rejected_id
        self._rejected[rejected_id] = RejectedRow(
            rejected_id=rejected_id,
            rejected_at=self.now,
            source=source,
            format=fmt,
            reason_codes=codes,
            reasons=orjson.dumps([p.as_dict() for p in problems]).decode(),
            payload=payload_json,
            payload_encrypted=encrypted,
            status="open",
            attempts=0,
            replayed_at=None,
        )
        self._positions[rejected_id] = self._position
        if len(self._rejected) >= 5_000 and not self._hold:
            self._flush_rejected()

    # -- writing ------------------------------------------------------------------
    def flush(self) -> None:
        """Write what is staged: events (deduplicated) and rejected payloads."""
        refused = 0
        if self._pending:
            rows = list(self._pending.values())
            refused = self.log.refused_suppressed
            stored = self.log.append(rows)
            refused = self.log.refused_suppressed - refused
            duplicates = len(rows) - stored - refused + self._pending_duplicates
            self._pending.clear()
        else:
            stored, duplicates = 0, self._pending_duplicates
        self._pending_duplicates = 0
        for kind, checked in self._reference.items():
            written, unchanged = reference.write_rows(self.log.engine, kind, checked, self.now)
            stored, duplicates = stored + written, duplicates + unchanged
        self._reference.clear()
        self._count(stored, duplicates, refused)
        self._flush_rejected()

    def _count(self, stored: int, duplicates: int, suppressed: int = 0) -> None:
        for counts in (self.report, self._file):
            counts.accepted += stored
            counts.duplicates += duplicates
            counts.suppressed += suppressed

    def _flush_rejected(self) -> None:
        if self._rejected:
            self.report.rejected_stored += self.log.add_rejected(list(self._rejected.values()))
            self._rejected.clear()


def show_text(text: str | None, limit: int = 60) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pseudonymise_payload_deep(batch: dict, pseudonymiser: Pseudonymiser, cipher: PayloadCipher) -> list[Problem]:
    """Pseudonymise a batch and every call in it (for keeping a refused batch)."""
    problems = pseudonymise_payload(batch, pseudonymiser, cipher)
    for item in batch.get("batch", []):
        if isinstance(item, dict):
            problems.extend(pseudonymise_payload(item, pseudonymiser, cipher))
    return [p for p in problems if p.code != "invalid_identifier"]


def _undecodable(row: dict) -> bool:
    """True when a CSV row decoded with surrogateescape held bytes that are not UTF-8."""
    return any("\udc80" <= ch <= "\udcff" for value in row.values() if isinstance(value, str) for ch in value)


def _event_from_row(row: dict) -> dict:
    """A Parquet row as a Segment payload: nested JSON text parsed, times as ISO strings."""
    payload = {}
    for key, value in row.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
        elif isinstance(value, str) and key in ("properties", "traits", "context") and value.startswith("{"):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
        payload[key] = value
    return payload


def _json_bytes(value: object) -> bytes:
    """JSON of any parsed value, however deep (orjson stops at 255 levels; this writes on without recursion)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        pass
    out: list[bytes] = []
    stack: list = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
        elif isinstance(item, dict):
            parts: list = [b"{"]
            for i, (key, child) in enumerate(item.items()):
                parts += [(b"," if i else b"") + orjson.dumps(str(key)) + b":", child]
            stack.extend(reversed(parts + [b"}"]))
        elif isinstance(item, list):
            parts = [b"["]
            for i, child in enumerate(item):
                parts += ([b","] if i else []) + [child]
            stack.extend(reversed(parts + [b"]"]))
        else:
            try:
                out.append(orjson.dumps(item))
            except TypeError:  # an integer past 64 bits
                out.append(str(item).encode())
    return b"".join(out)


def _cut_deep(payload: dict, limit: int, cipher: PayloadCipher) -> dict:
    """A copy of ``payload`` whose objects and arrays below ``limit`` levels are each replaced by their JSON,
    encrypted: what a refused call nests too deeply is kept, but never in the clear and never too deep to
    write."""
    top: dict = {}
    stack: list[tuple[dict | list, dict | list, int]] = [(payload, top, 1)]
    while stack:
        source, target, depth = stack.pop()
        for key, child in source.items() if isinstance(source, dict) else enumerate(source):
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    child = cipher.encrypt_value(_json_bytes(child).decode())
                else:
                    copy: dict | list = {} if isinstance(child, dict) else [None] * len(child)
                    stack.append((child, copy, depth + 1))
                    child = copy
            target[key] = child  # (a list's keys are its indices)
    return top


def _clean_and_shallow(raw: bytes) -> tuple[bool, bool]:
    """For the JSON text of a call or a batch: (the personal-data rule would change nothing in it, none of its
    calls nests deeper than ``MAX_DEPTH``), each found the cheap way or answered False."""
    text = raw.decode("utf-8", "replace")
    shallow = text.count("{") + text.count("[") <= MAX_DEPTH  # no deeper than its brackets
    return not screen_hits(text), shallow


def _few_brackets(payload: dict) -> bool:
    """True when the call's JSON holds no more brackets than ``MAX_DEPTH`` (so it cannot nest deeper): one
    serialisation and two counts, where walking it would cost several times more."""
    try:
        text = orjson.dumps(payload)
    except TypeError:  # deeper than orjson writes, or an integer past 64 bits: measure it
        return False
    return text.count(b"{") + text.count(b"[") <= MAX_DEPTH
