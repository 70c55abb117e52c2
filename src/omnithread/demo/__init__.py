"""The demo: simulate a small retailer, then run every stage built so far over it.

Each stage is one step in :data:`STEPS`; a later stage adds its step (resolve
identities, build profiles, recommend...) and its part of the summary, and the
demo grows with the thread.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from omnithread.config import Settings
from omnithread.demo.sensed import SensedStoreEvents
from omnithread.flows import resolve_persons, score_lifetime, write_report
from omnithread.identity import connection_summary, evaluate_against_truth
from omnithread.ingest import IngestReport
from omnithread.ingest.reference import reference_summary
from omnithread.recommend.ablation import run_ablation, save_chart
from omnithread.recommend.service import Recommendations
from omnithread.sim import WorldConfig, simulate
from omnithread.workspace import Workspace

__all__ = ["DemoRun", "run_demo", "STEPS"]


@dataclass
class DemoRun:
    """What the demo did, step by step, for the edges to print."""

    settings: Settings
    config: WorldConfig
    sources_dir: Path
    manifest: dict = field(default_factory=dict)
    ingest: IngestReport | None = None
    reference: dict = field(default_factory=dict)  # catalogue and inventory imported, and what is stored
    stats: dict = field(default_factory=dict)
    rejected: list = field(default_factory=list)
    identity: dict = field(default_factory=dict)
    connection: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)
    profiles: int = 0
    sensed_days: float = 3.0
    sensing: dict = field(default_factory=dict)
    recommend: dict = field(default_factory=dict)
    ablation: dict = field(default_factory=dict)
    analytics: dict = field(default_factory=dict)  # lifetime value, journeys, the report's path
    tuning: dict | None = None  # signals and model chosen on validation (not printed: holds objects)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "data_dir": str(self.settings.data_dir),
            "sources_dir": str(self.sources_dir),
            "world": {
                "people": self.config.people,
                "days": self.config.days,
                "seed": self.config.seed,
                "stores": self.manifest.get("stores"),
                "checkout_free_stores": self.manifest.get("checkout_free_stores"),
            },
            "ingest": self.ingest.as_dict() if self.ingest else None,
            "reference": self.reference,
            "stats": self.stats,
            "rejected_by_reason": self.rejected,
            "identity": self.identity,
            "connection": self.connection,
            "identity_accuracy": self.accuracy,
            "profiles": self.profiles,
            "sensing": self.sensing,
            "recommend": self.recommend,
            "ablation": self.ablation,
            "analytics": self.analytics,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


def _simulate(run: DemoRun, ws: Workspace, progress: Callable[[str], None]) -> None:

    progress(f"simulating the retailer; sensing its checkout-free trips of the last {run.sensed_days:g} days")
    layer = SensedStoreEvents(last_days=run.sensed_days, seed=run.config.seed)
    run.manifest = simulate(run.config, run.sources_dir, store_layer=layer)
    run.sensing = layer.summary()


def _sensed_receipts(run: DemoRun, ws: Workspace, progress: Callable[[str], None]) -> None:
    progress("counting sensed receipts in the log")
    rows = ws.engine.rows(
        "SELECT count(*) AS receipts, count(*) FILTER (WHERE properties->>'review_required' = 'true') AS review "
        "FROM events WHERE event = 'Order Completed' AND properties->>'review_required' IS NOT NULL"
    )
    run.sensing.update(receipts_in_log=rows[0]["receipts"], receipts_in_log_for_review=rows[0]["review"])


def _ingest(run: DemoRun, ws: Workspace, progress: Callable[[str], None]) -> None:
    progress("ingesting every source")
    run.ingest = ws.ingestor().ingest_paths(run.manifest["sources"])
    reference = run.manifest.get("reference") or {}
    if reference:
        for kind in ("catalogue", "inventory"):
            run.reference[kind] = ws.ingestor().ingest_reference([reference[kind]], kind).as_dict()
        run.reference["stored"] = reference_summary(ws.engine)


def _summarise(run: DemoRun, ws: Workspace, progress: Callable[[str], None]) -> None:
    progress("summarising the event log")
    run.stats = ws.log.stats()
    run.rejected = ws.log.rejected_summary()


def _resolve(run: DemoRun, ws: Workspace, progress: Callable[[str], None]) -> None:
    progress("connecting identities into persons and building their profiles")
    report, run.profiles = resolve_persons(ws)
    run.identity = report.as_dict()
    run.connection = connection_summary(ws.engine)
    run.accuracy = evaluate_against_truth(ws.engine, ws.pseudonymiser, run.sources_dir / "truth")


def _understand(run: DemoRun, ws: Workspace, progress: Callable[[str], None]) -> None:
    progress("lifetime value, store and cross-channel analytics, and the report")
    lifetime = score_lifetime(ws)
    holdout = max(1, min(14, run.config.days // 4))  # a quarter of a short log at most
    path, data = write_report(ws, ws.settings.data_dir / "report.html", holdout_days=holdout)
    validation = data["lifetime_validation"]
    run.analytics = {
        "lifetime": {
            group: {
                k: v for k, v in fit.items() if k in ("persons", "repeat_buyers", "bgnbd", "gamma_gamma", "skipped")
            }
            for group, fit in lifetime.fits.items()
        },
        "lifetime_total": data.get("lifetime_total"),
        "lifetime_validation": {
            k: validation[k]
            for k in ("holdout_days", "persons", "actual_total", "bgnbd_forecast", "naive_forecast", "skipped")
            if k in validation
        },
        "journeys": data["journeys"],
        "rfm": data["rfm"],
        "report": str(path),
    }


def _recommend(run: DemoRun, ws: Workspace, progress: Callable[[str], None]) -> None:

    progress("choosing signal weights and the model on validation, training recommendations")
    service = Recommendations.train(ws.engine, ws.pseudonymiser, ws.settings.data_dir / "models")
    person = ws.engine.scalar(
        "SELECT person_id FROM profiles WHERE orders > 0 AND coalesce(consent_personalisation, "
        "true) ORDER BY revenue DESC, person_id LIMIT 1"
    )
    example = service.recommend(person, "for_you", n=5).as_dict() if person else None
    run.recommend = {"stats": service.stats, "example": example}
    run.tuning = service.tuning


def _ablation(run: DemoRun, ws: Workspace, progress: Callable[[str], None]) -> None:

    progress("measuring what joined offline data adds (ablation)")
    tuning = run.tuning
    run.ablation = run_ablation(ws.engine, ws.pseudonymiser, run.sources_dir / "truth", tuning=tuning)
    save_chart(run.ablation, ws.settings.data_dir / "ablation.svg")


STEPS: list[tuple[str, Callable]] = [
    ("simulate", _simulate),
    ("ingest", _ingest),
    ("summarise", _summarise),
    ("sensing", _sensed_receipts),
    ("resolve", _resolve),
    ("understand", _understand),
    ("recommend", _recommend),
    ("ablation", _ablation),
]


def run_demo(
    settings: Settings,
    config: WorldConfig | None = None,
    sources_dir: Path | None = None,
    progress: Callable[[str], None] = lambda step: None,
) -> DemoRun:
    """Simulate ``config`` into ``sources_dir`` (a temporary folder if None) and run every step."""
    config = config or WorldConfig.demo()
    with tempfile.TemporaryDirectory(prefix="omnithread-demo-") as scratch:
        run = DemoRun(settings, config, Path(sources_dir) if sources_dir else Path(scratch))
        with Workspace(settings) as ws:
            for name, step in STEPS:
                started = time.perf_counter()
                step(run, ws, progress)
                run.seconds[name] = time.perf_counter() - started
        return run
