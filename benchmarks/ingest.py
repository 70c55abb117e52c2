"""Import throughput: one million simulated events from JSON Lines into the log.

Prints events per second next to the time DuckDB alone takes to read the same
file with ``read_json`` (into a table, so both ends store what they read), both
measured in this one run, as medians of ``--repeat`` runs, and their ratio.

    python benchmarks/ingest.py [--events 1000000] [--repeat 3] [--python-path] [--memory] [--json]

``--memory`` also imports a quarter of the file and the whole file, each in a
fresh process, and prints each one's peak resident memory: a streaming import
holds the same amount whatever the file's length.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from omnithread.config import Settings
from omnithread.sim import WorldConfig, simulate
from omnithread.workspace import Workspace

WORK = Path(__file__).resolve().parent / ".work"


def events_file(count: int) -> Path:
    """The first ``count`` lines of a simulated retailer's web, app and voice events (cached)."""
    target = WORK / f"events-{count}.jsonl"
    if target.exists():
        return target
    people = max(1_000, count // 60)
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as scratch:
        manifest = simulate(WorldConfig(people=people, days=90, products=2_000, seed=1), scratch)
        written = 0
        with open(manifest["sources"][0], "rb") as source, open(target, "wb") as out:
            for line in source:
                if written == count:
                    break
                out.write(line)
                written += 1
    if written < count:
        raise SystemExit(f"the simulation gave only {written} lines, fewer than --events {count}")
    return target


def duckdb_read(path: Path) -> float:
    con = duckdb.connect()
    started = time.perf_counter()
    con.execute(
        f"CREATE TABLE t AS SELECT * FROM read_json('{path}', format='newline_delimited', ignore_errors=true)"
    ).fetchall()
    seconds = time.perf_counter() - started
    con.close()
    return seconds


def omnithread_ingest(path: Path, fast_path: bool) -> tuple[float, dict]:
    data_dir = Path(tempfile.mkdtemp(dir=WORK))
    try:
        with Workspace(Settings(data_dir=data_dir, fast_path=fast_path)) as ws:
            started = time.perf_counter()
            report = ws.ingestor().ingest_paths([path])
            seconds = time.perf_counter() - started
        return seconds, report.as_dict()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def peak_memory_mb(path: Path) -> float:
    """Peak resident memory of a fresh process that imports ``path`` (fast path)."""
    code = (
        "import resource, sys, tempfile; from pathlib import Path; "
        "from omnithread.config import Settings; from omnithread.workspace import Workspace; "
        f"ws = Workspace(Settings(data_dir=tempfile.mkdtemp(dir={str(WORK)!r}))); "
        f"ws.ingestor().ingest_paths([Path({str(path)!r})]); ws.close(); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 1024


def quarter_of(path: Path, count: int) -> Path:
    target = WORK / f"events-{count // 4}.jsonl"
    if not target.exists():
        with open(path, "rb") as source, open(target, "wb") as out:
            for number, line in enumerate(source):
                if number == count // 4:
                    break
                out.write(line)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--python-path", action="store_true", help="also time the event-by-event Python path")
    parser.add_argument("--memory", action="store_true", help="peak memory for a quarter and the whole file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    path = events_file(args.events)
    size_mb = path.stat().st_size / 1e6
    read = statistics.median(duckdb_read(path) for _ in range(args.repeat))
    runs = [omnithread_ingest(path, fast_path=True) for _ in range(args.repeat)]
    ours = statistics.median(seconds for seconds, _ in runs)
    report = runs[0][1]
    result = {
        "events": args.events,
        "file_mb": round(size_mb, 1),
        "repeat": args.repeat,
        "duckdb_read_json_s": round(read, 3),
        "omnithread_ingest_s": round(ours, 3),
        "omnithread_events_per_s": round(args.events / ours),
        "duckdb_events_per_s": round(args.events / read),
        "ratio_to_duckdb_read": round(ours / read, 2),
        "accepted": report["accepted"],
        "duplicates": report["duplicates"],
        "rejected": report["rejected"],
        "goal": {"events_per_s": 100_000, "ratio_to_duckdb_read": 3.0},
    }
    if args.python_path:
        seconds, _ = omnithread_ingest(path, fast_path=False)
        result["python_path_s"] = round(seconds, 3)
        result["python_path_events_per_s"] = round(args.events / seconds)
    if args.memory:
        result["peak_mb_quarter_file"] = round(peak_memory_mb(quarter_of(path, args.events)), 1)
        result["peak_mb_whole_file"] = round(peak_memory_mb(path), 1)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return
    print(f"Import of {args.events:,} simulated events ({size_mb:.0f} MB of JSON Lines), median of {args.repeat}")
    print(f"{'':34}{'seconds':>10}{'events/s':>12}")
    print(f"{'DuckDB read_json into a table':34}{read:>10.2f}{args.events / read:>12,.0f}")
    print(f"{'omnithread ingest':34}{ours:>10.2f}{args.events / ours:>12,.0f}")
    if args.python_path:
        print(
            f"{'omnithread, Python path only':34}{result['python_path_s']:>10.2f}"
            f"{result['python_path_events_per_s']:>12,}"
        )
    print(f"ratio omnithread / DuckDB read: {ours / read:.2f} (goal at most 3.0); events/s goal at least 100,000")
    print(f"accepted {report['accepted']:,}, duplicates {report['duplicates']:,}, rejected {report['rejected']:,}")
    if args.memory:
        print(
            f"peak memory: {result['peak_mb_quarter_file']:,.0f} MB for {args.events // 4:,} events, "
            f"{result['peak_mb_whole_file']:,.0f} MB for {args.events:,}"
        )


if __name__ == "__main__":
    main()
