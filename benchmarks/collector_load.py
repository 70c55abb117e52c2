"""Collector load: sustained events a second through the HTTP collector, with latency and a loss check.

Starts ``omnithread serve`` on loopback over a fresh data directory, then ``--clients`` threads send
Segment batches of ``--batch`` events for ``--seconds``; afterwards it checks that events stored plus
rejected equals events sent (zero loss) and prints sustained events/s and p50/p99 request latency.
With ``--kill``, a second run kills the server (SIGKILL) halfway, restarts it, and has the clients
retry every batch that got no answer: still zero loss and zero duplicates.

    python benchmarks/collector_load.py [--seconds 20] [--batch 100] [--clients 6] [--kill] [--json]
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

import httpx
import numpy as np
import orjson

from omnithread.api.keys import KeyStore
from omnithread.privacy.secret import load_secret


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(data: Path, port: int, env: dict | None = None) -> subprocess.Popen:
    """``omnithread serve`` over ``data`` on ``port`` (with ``env`` added to the environment), once healthy."""
    env = dict(os.environ, OMNITHREAD_DATA_DIR=str(data), **(env or {}))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from omnithread.cli.main import app; app()", "serve", "--port", str(port)],
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


def event(client: int, n: int, i: int) -> dict:
    return {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": f"load-{client}-{n % 500}",
        "messageId": f"load-{client}-{n}-{i}",
        "context": {"channel": "web"},
        "properties": {"product_id": f"P{(n * 7 + i) % 300}", "price": 1.5},
    }


def run(seconds: float, batch: int, clients: int, kill: bool) -> dict:
    data = Path(tempfile.mkdtemp(prefix="omnithread-load-"))
    store = KeyStore(data, load_secret(data))
    key = store.create("write", "load", rate_per_second=1e9)[0]
    store.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    headers = {**auth, "Content-Type": "application/json"}
    server = {"proc": start(data, port)}
    latencies, sent, answered, lock = [], [0], [0], threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(c: int) -> None:
        n = 0
        with httpx.Client(timeout=10) as http:
            while time.monotonic() < stop_at:
                body = orjson.dumps({"batch": [event(c, n, i) for i in range(batch)]})  # cheap to build: the
                while True:  # retry until answered, as Segment's clients do   # generator shares the cores
                    t = time.perf_counter()
                    try:
                        r = http.post(f"{url}/v1/batch", content=body, headers=headers)
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

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.monotonic()
    for th in threads:
        th.start()
    if kill:
        k = threading.Thread(target=killer)
        k.start()
    for th in threads:
        th.join()
    if kill:
        k.join()
    elapsed = time.monotonic() - started
    stored = httpx.get(f"{url}/health").json()["events"]
    server["proc"].terminate()
    server["proc"].wait(15)
    ms = np.array(latencies) * 1000
    return {
        "seconds": round(elapsed, 1),
        "batch": batch,
        "clients": clients,
        "killed_midway": kill,
        "events_sent": sent[0],
        "events_stored": stored,
        "lost": sent[0] - stored,
        "duplicates": max(0, stored - sent[0]),
        "events_per_second": round(sent[0] / elapsed),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--kill", action="store_true", help="also run with the server killed halfway")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = [run(args.seconds, args.batch, args.clients, False)]
    if args.kill:
        runs.append(run(args.seconds, args.batch, args.clients, True))
    if args.json:
        json.dump({"runs": runs}, sys.stdout)
        sys.stdout.write("\n")
        return
    print(f"{'run':16}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'sent':>10}{'stored':>10}{'lost':>6}{'dupes':>7}")
    for r in runs:
        name = "killed midway" if r["killed_midway"] else "steady"
        print(
            f"{name:16}{r['events_per_second']:>10,}{r['p50_ms']:>9}{r['p99_ms']:>9}{r['events_sent']:>10,}"
            f"{r['events_stored']:>10,}{r['lost']:>6}{r['duplicates']:>7}"
        )


if __name__ == "__main__":
    main()
