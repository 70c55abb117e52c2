"""What hostile and careless clients cost the server: memory, other clients' latency, audit log growth.

Starts ``omnithread serve`` on loopback over a fresh data directory and measures, each against the server's
own figures just before:

* peak resident memory (VmHWM) while unauthenticated clients send a 1 GiB body with its length declared, a
  1 GiB chunked body, and four 300 MB bodies at once;
* 600 stalled connections (a third part-way through their headers, a third part-way through a body, a third
  silent): how long ``/health`` takes to answer beside them, and how many the server has closed once the
  request deadline (``--timeout`` seconds) has passed;
* 2,000 unauthenticated requests naming an email in their path: how many audit rows and bytes they add.

Prints a table; ``--json`` prints the same figures as one JSON object.

    python benchmarks/hostile_clients.py [--timeout 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_load import free_port  # noqa: E402  (one way to start a server for benchmarks)
from collector_load import start as serve

GIB = 1 << 30


def start(data: Path, port: int, timeout: float) -> subprocess.Popen:
    return serve(data, port, {"OMNITHREAD_REQUEST_TIMEOUT": str(timeout)})


def memory_mb(pid: int, field: str) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith(field)).split()[1]) / 1024


def body(size: int):
    chunk = b" " * (1 << 20)
    for _ in range(size >> 20):
        yield chunk


def send(url: str, size: int, declared: bool) -> int:
    headers = {"Content-Length": str(size)} if declared else {}
    try:
        return httpx.post(f"{url}/v1/batch", content=body(size), headers=headers, timeout=120).status_code
    except httpx.HTTPError:  # the server may close the connection as soon as it has answered
        return 413


def memory_case(pid: int, url: str, bodies: list[int], declared: bool) -> dict:
    before = memory_mb(pid, "VmHWM")
    results: list[int] = []
    threads = [threading.Thread(target=lambda s=s: results.append(send(url, s, declared))) for s in bodies]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "statuses": sorted(set(results)),
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_growth_mb": round(memory_mb(pid, "VmHWM") - before, 1),
        "rss_after_mb": round(memory_mb(pid, "VmRSS"), 1),
    }


def stalled_case(pid: int, port: int, url: str, timeout: float, count: int = 600) -> dict:
    before = memory_mb(pid, "VmHWM")
    sockets = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        if i % 3 == 0:
            s.sendall(b'POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"batch":[')
        elif i % 3 == 1:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sockets.append(s)
    latencies = []
    for _ in range(10):
        t = time.perf_counter()
        httpx.get(f"{url}/health", timeout=10)
        latencies.append(time.perf_counter() - t)
    time.sleep(timeout + 1.5)
    closed = 0
    for s in sockets:
        s.settimeout(0.05)  # a connection the server closed answers at once
        try:
            answer = s.recv(64)
            closed += answer == b"" or answer.startswith(b"HTTP/1.1 408")
        except ConnectionResetError:
            closed += 1
        except socket.timeout:  # still open
            pass
        s.close()
    return {
        "connections": count,
        "health_max_ms": round(max(latencies) * 1000, 1),
        "closed_after_deadline": closed,
        "peak_rss_growth_mb": round(memory_mb(pid, "VmHWM") - before, 1),
    }


def audit_case(
    data: Path, url: str, proc: subprocess.Popen, port: int, timeout: float
) -> tuple[dict, subprocess.Popen]:
    def rows() -> int:
        con = sqlite3.connect(f"file:{data / 'keys.sqlite'}?mode=ro", uri=True)
        try:
            return con.execute("SELECT count(*) FROM audit_log").fetchall()[0][0]
        finally:
            con.close()

    def size() -> int:  # the bytes the audit rows hold
        con = sqlite3.connect(f"file:{data / 'keys.sqlite'}?mode=ro", uri=True)
        try:
            return con.execute(
                "SELECT coalesce(sum(length(at) + length(coalesce(key_id, '')) + length(action) + "
                "length(coalesce(target, '')) + length(outcome) + length(coalesce(detail, ''))), 0) "
                "FROM audit_log"
            ).fetchall()[0][0]
        finally:
            con.close()

    rows_before, bytes_before = rows(), size()
    with httpx.Client() as client:
        for i in range(2000):
            client.get(f"{url}/v1/persons/jane.doe{i}@example.org")
    proc.terminate()  # the open window's count is written as the server stops
    proc.wait(15)
    figures = {"requests": 2000, "audit_rows_added": rows() - rows_before, "bytes_added": size() - bytes_before}
    return figures, start(data, port, timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=5.0, help="the server's request deadline, seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="omnithread-hostile-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(data, port, args.timeout)
    result = {"rss_at_rest_mb": round(memory_mb(proc.pid, "VmRSS"), 1), "request_timeout_s": args.timeout}
    try:
        for name, bodies, declared in (
            ("one_gib_declared", [GIB], True),
            ("one_gib_chunked", [GIB], False),
            ("four_300mb_at_once", [300 << 20] * 4, True),
        ):
            result[name] = memory_case(proc.pid, url, bodies, declared)
            proc.terminate()  # a fresh process for each case: its peak is its own
            proc.wait(15)
            proc = start(data, port, args.timeout)
        result["stalled"] = stalled_case(proc.pid, port, url, args.timeout)
        result["audit_flood"], proc = audit_case(data, url, proc, port, args.timeout)
    finally:
        proc.terminate()
        proc.wait(15)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return
    print(f"Server at rest: {result['rss_at_rest_mb']:,.0f} MB resident")
    print(f"{'unauthenticated bodies':28}{'answers':>10}{'seconds':>10}{'peak RSS +MB':>14}")
    for label, key in (
        ("1 GiB, length declared", "one_gib_declared"),
        ("1 GiB, chunked", "one_gib_chunked"),
        ("4 x 300 MB at once", "four_300mb_at_once"),
    ):
        row = result[key]
        print(
            f"{label:28}{','.join(map(str, row['statuses'])):>10}{row['seconds']:>10.2f}"
            f"{row['peak_rss_growth_mb']:>14.1f}"
        )
    s = result["stalled"]
    print(
        f"{s['connections']} stalled connections: /health answered in at most {s['health_max_ms']:.0f} ms beside "
        f"them; {s['closed_after_deadline']} closed by the server after the {args.timeout:g} s deadline; "
        f"peak RSS +{s['peak_rss_growth_mb']:.1f} MB"
    )
    a = result["audit_flood"]
    print(
        f"{a['requests']:,} unauthenticated reads naming an email: {a['audit_rows_added']:,} audit rows "
        f"({a['bytes_added']:,} bytes of entries) added"
    )


if __name__ == "__main__":
    main()
