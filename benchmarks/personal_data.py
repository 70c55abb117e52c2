"""What finding personal data anywhere in a payload costs the import.

Imports the same events with the personal-data rule (``omnithread.privacy.detect``) on and, as the baseline,
switched off in this same process (identifier fields the identity graph reads are hashed either way), on the
fast path and on the event-by-event Python path the collector uses. Two corpora:

* ``simulated``: the simulated retailer's web, app and voice events (no IP addresses or user agents);
* ``segment``: the same events with the context analytics.js and Segment's servers add to every call (IP
  address, user agent, page URL, referrer, search, title, locale, library version), and one call in fifty
  carrying an email or phone number in an odd place (a URL's query string, free text, a nested key).

Prints a table of events/s (median of ``--repeat`` runs) and the ratio on/off; ``--json`` prints the same
figures as one JSON object.

    python benchmarks/personal_data.py [--events 200000] [--python-events 20000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import WORK, events_file  # noqa: E402  (the import benchmark's cached simulated events)
from omnithread.config import Settings  # noqa: E402
from omnithread.ingest import bulk, pipeline  # noqa: E402
from omnithread.privacy.detect import PersonalData  # noqa: E402
from omnithread.workspace import Workspace  # noqa: E402

_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.129 "
    "Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
]
_ODD = [
    lambda r: {"page": {"url": f"https://shop.example/account?email=shopper{r}%40example.org"}},
    lambda r: {"note": f"call me on 07700 900{r % 1000:03d} after six"},
    lambda r: {"customer": {"Email": f"Shopper{r}@Example.org", "mobile": f"+4477009{r % 100000:05d}"}},
]


def segment_file(source: Path) -> Path:
    """``source`` with the context Segment's libraries and servers add, and a few identifiers in odd places."""
    target = source.with_name(source.stem + "-segment.jsonl")
    if target.exists():
        return target
    rng = random.Random(7)
    with open(source, "rb") as lines, open(target, "wb") as out:
        for number, line in enumerate(lines):
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:  # the simulator's deliberately broken lines stay broken
                out.write(line)
                continue
            if isinstance(event, dict) and isinstance(event.get("context"), dict):
                path = (
                    (event.get("properties") or {}).get("path", "/")
                    if isinstance(event.get("properties"), dict)
                    else "/"
                )
                event["context"].update(
                    {
                        "ip": f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                        "userAgent": rng.choice(_AGENTS),
                        "locale": "en-GB",
                        "timezone": "Europe/London",
                        "library": {**event["context"].get("library", {}), "version": "4.1.0"},
                        "page": {
                            "path": path,
                            "referrer": "https://www.search.example/",
                            "search": "?utm_source=mail",
                            "title": "Shop",
                            "url": f"https://shop.example{path}?utm_source=mail",
                        },
                    }
                )
                if number % 50 == 0:
                    odd = rng.choice(_ODD)(number)
                    (event["context"] if "page" in odd else event.setdefault("properties", {})).update(odd)
            out.write(orjson.dumps(event) + b"\n")
    return target


@contextlib.contextmanager
def rule_off():
    """The baseline: the rule switched off (the fast path's screen never matches; the Python path skips it)."""
    saved = bulk._SCREEN_SQL, PersonalData.payload, PersonalData.walk, pipeline._clean_and_shallow
    bulk._SCREEN_SQL = "'a\\bb'"  # matches nothing
    PersonalData.payload = lambda self, payload, problems=None: None
    PersonalData.walk = lambda self, value, path="", problems=None: value
    pipeline._clean_and_shallow = lambda raw: (False, False)  # no screen of the text as it arrived either
    try:
        yield
    finally:
        bulk._SCREEN_SQL, PersonalData.payload, PersonalData.walk, pipeline._clean_and_shallow = saved


def ingest_seconds(path: Path, fast_path: bool) -> tuple[float, int]:
    data_dir = Path(tempfile.mkdtemp(dir=WORK))
    try:
        with Workspace(Settings(data_dir=data_dir, fast_path=fast_path)) as ws:
            started = time.perf_counter()
            report = ws.ingestor().ingest_paths([path])
            return time.perf_counter() - started, report.accepted
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def head(path: Path, count: int) -> Path:
    target = path.with_name(f"{path.stem}-head{count}.jsonl")
    if not target.exists():
        with open(path, "rb") as source, open(target, "wb") as out:
            for number, line in enumerate(source):
                if number == count:
                    break
                out.write(line)
    return target


def measure(path: Path, events: int, fast_path: bool, repeat: int) -> dict:
    rows = {}
    for label, switch in (("off", rule_off), ("on", contextlib.nullcontext)):
        runs = []
        for _ in range(repeat):
            with switch():
                runs.append(ingest_seconds(path, fast_path))
        seconds = statistics.median(s for s, _ in runs)
        rows[label] = {"seconds": round(seconds, 3), "events_per_s": round(events / seconds)}
    rows["ratio_on_to_off"] = round(rows["on"]["seconds"] / rows["off"]["seconds"], 3)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events for the fast path")
    parser.add_argument("--python-events", type=int, default=20_000, help="events for the Python path")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    simulated = events_file(args.events)
    corpora = {"simulated": simulated, "segment": segment_file(simulated)}
    result = {"events": args.events, "python_events": args.python_events, "repeat": args.repeat, "runs": {}}
    for name, path in corpora.items():
        result["runs"][f"{name}, fast path"] = measure(path, args.events, True, args.repeat)
        result["runs"][f"{name}, Python path"] = measure(
            head(path, args.python_events), args.python_events, False, args.repeat
        )
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return
    print(
        f"Import with the personal-data rule off (baseline) and on, median of {args.repeat} "
        f"({args.events:,} events on the fast path, {args.python_events:,} on the Python path)"
    )
    print(f"{'corpus, path':30}{'off ev/s':>12}{'on ev/s':>12}{'on/off time':>13}")
    for label, row in result["runs"].items():
        print(
            f"{label:30}{row['off']['events_per_s']:>12,}{row['on']['events_per_s']:>12,}"
            f"{row['ratio_on_to_off']:>13.2f}"
        )


if __name__ == "__main__":
    main()
