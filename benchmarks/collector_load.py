"""Collector load: sustained events a second through the HTTP collector, with latency and a loss check.

Starts ``omnithread serve`` on loopback over a fresh data directory, then ``--clients`` threads send
Segment batches of ``--batch`` events for ``--seconds``; afterwards it checks that events stored plus
rejected equals events sent (zero loss) and prints sustained events/s and p50/p99 request latency.
With ``--kill``, a second run kills the server (SIGKILL) halfway, restarts it, and has the clients
retry every batch that got no answer: still zero loss and zero duplicates.

With ``--jobs``, both runs start from a log that already holds a simulated retailer (``--people``), resolved
and with a trained model, and a
second run hands the server, while the load runs, a full resolve, a training, an erasure (each through the
command line, which hands it to the server as a job) and a till export dropped into its drop folder; the load
goes on until the last of them is done. Collection should not notice: the two runs side by side.

With ``--collectors N``, the clients send to N collector processes of their own (``serve --role collector``)
that append to a Redis stream (a ``redis-server`` started here, append-only file fsynced at every write), and
the server that owns the log loads it; the loss check waits until the loader has caught up, and says how long
that took after the load ended.

    python benchmarks/collector_load.py [--seconds 20] [--batch 100] [--clients 6] [--kill] [--jobs]
        [--collectors N] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import httpx
import numpy as np
import orjson

from omnithread.api.keys import KeyStore
from omnithread.privacy.secret import load_secret


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(data: Path, port: int, env: dict | None = None, role: str = "all") -> subprocess.Popen:
    """``omnithread serve`` over ``data`` on ``port`` (with ``env`` added to the environment), once healthy."""
    env = dict(os.environ, OMNITHREAD_DATA_DIR=str(data), **(env or {}))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from omnithread.cli.main import app; app()",
            "serve",
            "--port",
            str(port),
            "--role",
            role,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    """A ``redis-server`` keeping its append-only file in ``directory``, fsynced at every write; its address."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--appendonly", "yes"]
        + ["--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def event(client: int, n: int, i: int) -> dict:
    return {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": f"load-{client}-{n % 500}",
        "messageId": f"load-{client}-{n}-{i}",
        "context": {"channel": "web"},
        "properties": {"product_id": f"P{(n * 7 + i) % 300}", "price": 1.5},
    }


def cli(data: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMNITHREAD_DATA_DIR=str(data))
    command = [sys.executable, "-c", "from omnithread.cli.main import main; main()", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True)


def preload(data: Path, people: int) -> dict:
    """A simulated retailer's events in the log of ``data``, resolved, with a model trained; its till export
    and an email to erase."""
    from omnithread.sim import WorldConfig, simulate

    world = Path(tempfile.mkdtemp(prefix="omnithread-world-"))
    simulate(WorldConfig(people=people, days=60, seed=5), world)
    sources = world / "sources"
    done = cli(data, "ingest", str(sources / "events.jsonl"), str(sources / "store_events.jsonl"))
    if done.returncode:
        raise RuntimeError(done.stderr)
    for step in (("resolve",), ("train",)):  # persons and a model, as a server that has been running has
        done = cli(data, *step)
        if done.returncode:
            raise RuntimeError(done.stderr)
    email = None
    with open(sources / "events.jsonl", "rb") as lines:
        for line in lines:
            try:
                email = orjson.loads(line).get("traits", {}).get("email")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if email:
                break
    return {"till": sorted(sources.glob("till-*.csv"))[0], "email": email}


def hand_jobs(data: Path, world: dict, done: list) -> None:
    """A full resolve, a training and an erasure through the command line (so, jobs of the server), then a
    till export into the drop folder; each one's seconds and exit code into ``done``."""
    time.sleep(2)
    for args in (["resolve"], ["train"], ["erase", world["email"]]):
        t = time.perf_counter()
        answer = cli(data, *args)
        done.append({"job": args[0], "seconds": round(time.perf_counter() - t, 2), "exit_code": answer.returncode})
    t = time.perf_counter()
    dropped = data / "drop" / world["till"].name
    (data / "drop" / ("." + world["till"].name + ".part")).write_bytes(world["till"].read_bytes())
    (data / "drop" / ("." + world["till"].name + ".part")).rename(dropped)
    while not list((data / "drop" / "done").glob("*" + world["till"].name)):
        if list((data / "drop" / "failed").glob("*" + world["till"].name)):
            done.append({"job": "drop folder", "seconds": None, "exit_code": 1})
            return
        time.sleep(0.1)
    done.append({"job": "drop folder", "seconds": round(time.perf_counter() - t, 2), "exit_code": 0})


def run(
    seconds: float, batch: int, clients: int, kill: bool, jobs: bool = False, people: int = 0, collectors: int = 0
) -> dict:
    data = Path(tempfile.mkdtemp(prefix="omnithread-load-"))
    world = preload(data, people) if people else None
    store = KeyStore(data, load_secret(data))
    key = store.create("write", "load", rate_per_second=1e9)[0]
    store.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    headers = {**auth, "Content-Type": "application/json"}
    env, redis, collector_procs = {}, None, []
    if collectors:
        redis, env["OMNITHREAD_BROKER"] = start_redis(data.parent / (data.name + "-redis"))
    server = {"proc": start(data, port, env)}
    targets = [url]
    if collectors:
        ports = [free_port() for _ in range(collectors)]
        collector_procs = [start(data, p, env, role="collector") for p in ports]
        targets = [f"http://127.0.0.1:{p}" for p in ports]
    stored_before = httpx.get(f"{url}/health").json()["events"]
    latencies, sent, answered, lock = [], [0], [0], threading.Lock()
    stop_at = time.monotonic() + seconds
    finished_jobs: list = []
    jobs_done = threading.Event()

    def client(c: int) -> None:
        n = 0
        with httpx.Client(timeout=10) as http:
            while time.monotonic() < stop_at or (jobs and not jobs_done.is_set()):
                body = orjson.dumps({"batch": [event(c, n, i) for i in range(batch)]})  # cheap to build: the
                while True:  # retry until answered, as Segment's clients do   # generator shares the cores
                    t = time.perf_counter()
                    try:
                        r = http.post(f"{targets[c % len(targets)]}/v1/batch", content=body, headers=headers)
                        if r.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.2)
                with lock:
                    latencies.append(time.perf_counter() - t)
                    sent[0] += batch
                    answered[0] += r.json()["accepted"]
                n += 1

    def killer() -> None:
        time.sleep(seconds / 2)
        server["proc"].send_signal(signal.SIGKILL)
        server["proc"].wait()
        server["proc"] = start(data, port)

    def jobs_then_done() -> None:
        try:
            hand_jobs(data, world, finished_jobs)
        finally:
            jobs_done.set()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.monotonic()
    for th in threads:
        th.start()
    if kill:
        k = threading.Thread(target=killer)
        k.start()
    if jobs:
        j = threading.Thread(target=jobs_then_done)
        j.start()
    for th in threads:
        th.join()
    if kill:
        k.join()
    if jobs:
        j.join()
    elapsed = time.monotonic() - started
    catch_up = 0.0
    if collectors:  # the loader's backlog emptied: everything acknowledged is in the log
        while httpx.get(f"{url}/health").json()["broker"]["backlog"]:
            time.sleep(0.05)
        catch_up = time.monotonic() - started - elapsed
        for proc in collector_procs:
            proc.terminate()
            proc.wait(30)
    live = httpx.get(f"{url}/health").json()["events"]
    server["proc"].terminate()
    server["proc"].wait(60)
    if redis is not None:
        redis.terminate()
        redis.wait(30)
    # the load's own events, counted in the log (the drop folder and an erasure change the rest of it)
    with duckdb.connect(str(data / "omnithread.duckdb"), read_only=True) as con:
        stored, distinct = con.execute(
            "SELECT count(*), count(DISTINCT message_id) FROM events WHERE message_id LIKE 'load-%'"
        ).fetchone()
    ms = np.array(latencies) * 1000
    return {
        "seconds": round(elapsed, 1),
        "batch": batch,
        "clients": clients,
        "collectors": collectors,
        "loader_catch_up_seconds": round(catch_up, 2),
        "killed_midway": kill,
        "events_sent": sent[0],
        "events_acknowledged": answered[0],
        "data_dir": str(data),
        "live_events": live,
        "events_stored": stored,
        "lost": sent[0] - distinct,
        "duplicates": stored - distinct,
        "events_per_second": round(sent[0] / elapsed),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "preloaded_events": stored_before,
        "jobs": finished_jobs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--kill", action="store_true", help="also run with the server killed halfway")
    parser.add_argument(
        "--jobs", action="store_true", help="also run with a resolve, a training, an erasure and a drop-folder import"
    )
    parser.add_argument("--people", type=int, default=3000, help="with --jobs: the retailer preloaded in both runs")
    parser.add_argument(
        "--collectors",
        default="0",
        help="collector processes of their own, behind a Redis broker (0: none); several, comma-separated "
        "(0,1,2), run each in turn for a side-by-side table",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    people = args.people if args.jobs else 0
    runs = []
    for n in (int(x) for x in args.collectors.split(",")):
        runs.append(run(args.seconds, args.batch, args.clients, False, people=people, collectors=n))
        if args.kill:
            runs.append(run(args.seconds, args.batch, args.clients, True, people=people, collectors=n))
        if args.jobs:
            runs.append(run(args.seconds, args.batch, args.clients, False, jobs=True, people=people, collectors=n))
    if args.json:
        json.dump({"runs": runs}, sys.stdout)
        sys.stdout.write("\n")
        return
    print("collectors: processes of their own behind a Redis broker (0: the server's own collector);")
    print("catch-up: seconds the loader needed after the load ended to have every acknowledged event in the log\n")
    print(
        f"{'collectors':>10}  {'run':16}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'sent':>10}{'stored':>10}"
        f"{'lost':>6}{'dupes':>7}"
        f"{'catch-up s':>12}"
    )
    for r in runs:
        name = "killed midway" if r["killed_midway"] else ("with jobs" if r["jobs"] else "steady")
        print(
            f"{r['collectors']:>10}  {name:16}{r['events_per_second']:>10,}{r['p50_ms']:>9}{r['p99_ms']:>9}"
            f"{r['events_sent']:>10,}"
            f"{r['events_stored']:>10,}{r['lost']:>6}{r['duplicates']:>7}{r['loader_catch_up_seconds']:>12}"
        )
    for r in runs:
        if r["jobs"]:
            print(
                f"\njobs during the load, {r['collectors']} collectors "
                f"(preloaded log: {r['preloaded_events']:,} events)"
            )
            print(f"{'job':16}{'seconds':>10}{'exit':>6}")
            for job in r["jobs"]:
                print(
                    f"{job['job']:16}{job['seconds'] if job['seconds'] is not None else '-':>10}{job['exit_code']:>6}"
                )


if __name__ == "__main__":
    main()
