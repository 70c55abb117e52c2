"""Recorded sensor signals on disk, and running the engine over them.

A recording is a directory:

* ``layout.json``: the store's gondolas, shelves, plates and planogram (:class:`Layout`);
* ``plates.parquet``: one row per plate message (``plate_id``, ``seq``, ``t``, ``samples``: 12 grams),
  in the order they arrived;
* ``messages.jsonl``: camera frames and gate events, one JSON message a line, in the order they arrived;
  plate messages may also be here (any mix works);
* ``truth.json`` (simulated recordings only): each trip's real cart and every real pick and put-back.

:func:`read_messages` merges the files by arrival order (plate rows and JSON lines each keep their
own order; between files, by time), so a recording replays as the wire delivered it.
"""

from __future__ import annotations

import gzip
import heapq
from pathlib import Path

import orjson

from omnithread.errors import InvalidRequestError
from omnithread.sensing.engine import SensingConfig, SensingEngine
from omnithread.sensing.layout import Layout

__all__ = ["write_recording", "read_layout", "read_messages", "run_recording"]


def write_recording(
    signals, directory: Path | str, *, shuffle: float = 0.0, duplicates: float = 0.0, seed: int = 0
) -> dict:
    """Write simulated ``signals`` as a recording, optionally delivered out of order and with duplicates."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "layout.json").write_bytes(orjson.dumps(signals.layout.to_dict()))
    (directory / "truth.json").write_bytes(orjson.dumps(signals.truth))
    messages = signals.messages(shuffle=shuffle, duplicates=duplicates, seed=seed)
    plates = [m for m in messages if m["kind"] == "plate"]
    pq.write_table(
        pa.table(
            {
                "plate_id": [m["plate_id"] for m in plates],
                "seq": [m["seq"] for m in plates],
                "t": [m["t"] for m in plates],
                "samples": pa.array([m["samples"] for m in plates], type=pa.list_(pa.float32(), 12)),
            }
        ),
        directory / "plates.parquet",
        compression="zstd",
    )
    with open(directory / "messages.jsonl", "wb") as handle:
        for m in messages:
            if m["kind"] != "plate":
                handle.write(orjson.dumps(m) + b"\n")
    return {
        "plate_messages": len(plates),
        "other_messages": len(messages) - len(plates),
        "store_seconds": round(signals.end - signals.start, 1),
    }


def read_layout(directory: Path | str) -> Layout:
    path = Path(directory) / "layout.json"
    if not path.is_file():
        raise InvalidRequestError("recording", str(directory), "a sensing recording: a directory with layout.json")
    try:
        return Layout.from_dict(orjson.loads(path.read_bytes()))
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError("layout", str(path), f"a JSON store layout ({exc})") from exc


def _plate_rows(path: Path):
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=50_000):
        for row in batch.to_pylist():
            yield (row["t"] if isinstance(row.get("t"), (int, float)) else 0.0), dict(kind="plate", **row)


def _json_lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                msg = {
                    "kind": "unparsable",
                    "t": None,
                    "line": number,
                    "error": str(exc),
                    "raw": line[:200].decode("utf-8", "replace"),
                }
            t = msg.get("t") if isinstance(msg, dict) else None
            yield (t if isinstance(t, (int, float)) else 0.0), msg


def read_messages(directory: Path | str):
    """Every message of a recording, in arrival order."""
    directory = Path(directory)
    streams = []
    if (directory / "plates.parquet").is_file():
        streams.append(_plate_rows(directory / "plates.parquet"))
    for name in ("messages.jsonl", "messages.jsonl.gz"):
        if (directory / name).is_file():
            streams.append(_json_lines(directory / name))
    if not streams:
        raise InvalidRequestError(
            "recording", str(directory), "a sensing recording with plates.parquet or messages.jsonl"
        )
    for _, msg in heapq.merge(*streams, key=lambda r: r[0]):
        yield msg


def run_recording(directory: Path | str, config: SensingConfig = SensingConfig(), progress=None):
    """Run the sensing engine over a recording; returns the engine (problems, weight events) and receipts."""
    engine = SensingEngine(read_layout(directory), config)
    receipts = []
    for n, msg in enumerate(read_messages(directory), 1):
        engine.feed(msg)
        if progress and n % 100_000 == 0:
            progress(n)
            receipts.extend(engine.poll())
    receipts.extend(engine.close())
    return engine, receipts
