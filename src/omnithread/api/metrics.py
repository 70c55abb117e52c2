"""``/metrics``: what a running server has done, in Prometheus' text format, by Prometheus' own client.

Counted: events accepted, duplicates and refusals by reason (the reason codes of the schema's problems, or
``suppressed``); jobs finished by kind and state with their durations; every request's latency by route
template (never the path a client sent, which may hold anything) and status. Read at scrape time: jobs by
state. Each server has a registry of its own, so tests can start several in one process.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from omnithread.api.jobs import JOB_STATES, Job
from omnithread.destinations.webhooks import destination_metrics

__all__ = ["Metrics", "METRICS_CONTENT_TYPE", "RequestTimer"]

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_JOB_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter("omnithread_events_accepted", "Events stored by the collector", registry=self.registry)
        self.duplicates = Counter(
            "omnithread_events_duplicate", "Events the collector had stored already (retries)", registry=self.registry
        )
        self.refused = Counter(
            "omnithread_events_refused",
            "Events the collector refused, by reason code (kept, replayable)",
            ["reason"],
            registry=self.registry,
        )
        self.jobs_seconds = Histogram(
            "omnithread_job_duration_seconds",
            "How long finished jobs ran, by kind and final state",
            ["kind", "state"],
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        self.queued = Counter(
            "omnithread_events_queued",
            "Events a collector process appended to the broker (stored by the loader, counted there as accepted)",
            registry=self.registry,
        )
        self.backlog = Gauge(
            "omnithread_broker_backlog", "Broker entries not yet loaded into the log", registry=self.registry
        )
        self.jobs = Gauge("omnithread_jobs", "Jobs by state (in jobs.sqlite)", ["state"], registry=self.registry)
        self.deliveries = Gauge(
            "omnithread_destination_deliveries",
            "Webhook deliveries by destination and status (delivered, pending, dead)",
            ["destination", "status"],
            registry=self.registry,
        )
        self.delivery_failures = Gauge(
            "omnithread_destination_failed_attempts",
            "Delivery attempts that failed (an error status, a timeout, no connection), by destination",
            ["destination"],
            registry=self.registry,
        )
        self.delivery_latency = Gauge(
            "omnithread_destination_latency_ms",
            "Delivery latency of successful deliveries, p50 and p95, by destination",
            ["destination", "quantile"],
            registry=self.registry,
        )
        self.requests = Histogram(
            "omnithread_request_duration_seconds",
            "Request latency by route template, method and status",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def collected(
        self, accepted: int, duplicates: int, refused_codes: list[list[str]], suppressed: int, queued: bool = False
    ) -> None:
        """One collector request's outcome (``queued``: ``accepted`` went to the broker, not yet the log)."""
        if accepted:
            (self.queued if queued else self.accepted).inc(accepted)
        if duplicates:
            self.duplicates.inc(duplicates)
        for codes in refused_codes:
            for code in sorted(set(codes)) or ["invalid"]:
                self.refused.labels(code).inc()
        if suppressed:
            self.refused.labels("suppressed").inc(suppressed)

    def job_finished(self, job: Job) -> None:
        if job.seconds is not None:
            self.jobs_seconds.labels(job.kind, job.state).observe(job.seconds)

    def render(self, service) -> bytes:
        if getattr(service, "jobs", None) is not None:
            counts = {state: 0 for state in JOB_STATES}
            for state, count in service.jobs.counts().items():
                counts[state] = count
            for state, count in counts.items():
                self.jobs.labels(state).set(count)
        reader = getattr(service, "reader", None)
        if reader is not None:
            try:
                with service.read_lock:
                    rows = destination_metrics(reader.engine)
            except Exception:  # noqa: BLE001 - metrics report what they can
                rows = []
            for row in rows:
                name = row["destination"]
                for status in ("delivered", "pending", "dead"):
                    self.deliveries.labels(name, status).set(row[status] or 0)
                self.delivery_failures.labels(name).set(row["failed_attempts"] or 0)
                for quantile, key in (("0.5", "latency_p50_ms"), ("0.95", "latency_p95_ms")):
                    if row[key] is not None:
                        self.delivery_latency.labels(name, quantile).set(row[key])
        loader = getattr(service, "loader", None)
        if loader is not None:
            try:
                self.backlog.set(loader.backlog())
            except Exception:  # noqa: BLE001 - a broker that does not answer leaves the last figure
                pass
        return generate_latest(self.registry)


class RequestTimer:
    """ASGI middleware: every request's latency into ``metrics``, labelled by its route's template."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = [500]

        async def noting(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            route, endpoint = scope.get("route"), scope.get("endpoint")
            template = getattr(route, "path", None) or getattr(endpoint, "__name__", None) or "unmatched"
            self.metrics.requests.labels(template, scope.get("method", "?"), str(status[0])).observe(
                time.perf_counter() - started
            )
