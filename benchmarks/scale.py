"""Scale: a full identity resolve (persons and profiles) on DuckDB and on Spark (local mode), side by side.

For each ``--events`` size, a simulated retailer with about that many events is imported once (DuckDB's fast
path) and its log written as Parquet in the layout the Spark engine reads (``<data_dir>/spark/<table>``); then
each engine resolves it in a fresh process of its own, and the table gives the seconds and the peak memory
of that process with every process it started (Spark's JVM included), sampled every 0.2 s. Both engines'
persons are compared (the same partition of identifiers, the same person ids).

Collector figures (one and two collector processes behind the broker) come from
``benchmarks/collector_load.py --collectors 0,1,2`` (docs/scale.md).

    python benchmarks/scale.py [--events 100000,1000000] [--engines duckdb,spark] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SECRET = "the benchmark's one secret for both engines, long enough"


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MB."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    family, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in family} - family
        grew = bool(more)
        family |= more
    total = 0
    for member in family:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def build(data_dir: Path, events: int) -> dict:
    """A simulated retailer of about ``events`` events, imported into ``data_dir`` (DuckDB), and its log as
    Parquet folders for the Spark engine."""
    from omnithread.config import Settings
    from omnithread.sim import WorldConfig, simulate
    from omnithread.workspace import Workspace

    scratch = Path(tempfile.mkdtemp(prefix="omnithread-scale-world-"))
    people = max(1_000, events // 85)  # the simulated shopper makes about 85 events in 90 days
    started = time.perf_counter()
    manifest = simulate(WorldConfig(people=people, days=90, products=2_000, seed=1), scratch)
    with Workspace(Settings(data_dir=data_dir)) as ws:
        report = ws.ingestor().ingest_paths(manifest["sources"])
        spark = data_dir / "spark"
        for table in ("events", "rejected_events", "broker_positions"):
            folder = spark / table
            folder.mkdir(parents=True, exist_ok=True)
            # as the Spark engine writes its tables: JSON as text, message keys as DECIMAL(20,0)
            kinds = ws.engine.rows(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?", [table]
            )
            casts = [
                f"CAST({k['column_name']} AS VARCHAR) AS {k['column_name']}" for k in kinds if k["data_type"] == "JSON"
            ]
            if table == "events":
                casts.append("CAST(message_key AS DECIMAL(20,0)) AS message_key")
            select = f"* REPLACE ({', '.join(casts)})" if casts else "*"
            ws.engine.execute(f"COPY (SELECT {select} FROM {table}) TO '{folder}/part-0.parquet' (FORMAT parquet)")
    shutil.rmtree(scratch)
    return {"people": people, "events": report.accepted, "build_s": round(time.perf_counter() - started, 1)}


def resolve_once(data_dir: Path, engine: str) -> None:
    """(In a process of its own.) Resolve persons and profiles on ``engine``; print seconds and a digest."""
    from omnithread.config import Settings
    from omnithread.flows import resolve_persons
    from omnithread.workspace import Workspace

    with Workspace(Settings(data_dir=data_dir, engine=engine)) as ws:
        started = time.perf_counter()
        report, profiles = resolve_persons(ws)
        seconds = time.perf_counter() - started
        groups = ws.engine.rows(
            "SELECT person_id, list_sort(list(identifier)) AS ids FROM identity_map WHERE person_id IS NOT NULL "
            "GROUP BY person_id"
        )
    digest = sorted((g["person_id"], list(g["ids"])) for g in groups)
    partition = hashlib.sha256(json.dumps(digest).encode()).hexdigest()[:16]
    print(json.dumps({"seconds": seconds, "persons": report.persons, "partition": partition}))


def measure(data_dir: Path, engine: str) -> dict:
    env = dict(os.environ, OMNITHREAD_SECRET=SECRET)
    env.setdefault("OMNITHREAD_SPARK_DRIVER_MEMORY", "8g")
    proc = subprocess.Popen(
        [sys.executable, __file__, "--resolve-once", engine, str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_mb(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    out, _ = proc.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if proc.returncode:
        return {"engine": engine, "failed": True}
    answer = json.loads(out.strip().splitlines()[-1])
    return {
        "engine": engine,
        "resolve_s": round(answer["seconds"], 1),
        "process_s": round(wall, 1),
        "peak_mb": round(peak[0]),
        "persons": answer["persons"],
        "partition": answer["partition"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", default="100000,1000000", help="sizes, comma-separated")
    parser.add_argument("--engines", default="duckdb,spark")
    parser.add_argument("--keep", type=Path, help="keep the data directories here (reused when present)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--resolve-once", nargs=2, metavar=("ENGINE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.resolve_once:
        resolve_once(Path(args.resolve_once[1]), args.resolve_once[0])
        return
    os.environ["OMNITHREAD_SECRET"] = SECRET
    root = args.keep or Path(tempfile.mkdtemp(prefix="omnithread-scale-"))
    sizes = []
    for events in (int(x) for x in args.events.split(",")):
        data = root / f"events-{events}"
        facts_file = data / "scale-built.json"
        if facts_file.exists():
            facts = json.loads(facts_file.read_text())
        else:
            facts = build(data, events)
            facts_file.write_text(json.dumps(facts))
        runs = [measure(data, engine) for engine in args.engines.split(",")]
        partitions = {r.get("partition") for r in runs if not r.get("failed")}
        sizes.append({**facts, "runs": runs, "same_persons": len(partitions) == 1})
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    if args.json:
        json.dump({"sizes": sizes}, sys.stdout)
        sys.stdout.write("\n")
        return
    print(
        f"{'events':>12}{'people':>9}  {'engine':8}{'resolve s':>11}{'process s':>11}{'peak MB':>9}{'persons':>9}  same"
    )
    for size in sizes:
        for r in size["runs"]:
            if r.get("failed"):
                print(f"{size['events']:>12,}{size['people']:>9,}  {r['engine']:8}  failed")
                continue
            print(
                f"{size['events']:>12,}{size['people']:>9,}  {r['engine']:8}{r['resolve_s']:>11}{r['process_s']:>11}"
                f"{r['peak_mb']:>9,}{r['persons']:>9,}  {'yes' if size['same_persons'] else 'NO'}"
            )


if __name__ == "__main__":
    main()
