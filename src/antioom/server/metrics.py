"""Prometheus metrics, in a registry of the app's own (several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

from antioom.engine.progress import Summary


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.imports = Counter(
            "antioom_imports", "Finished imports by status", ["status"], registry=self.registry
        )
        self.rows_processed = Counter(
            "antioom_rows_processed", "Rows committed", registry=self.registry
        )
        self.rows_failed = Counter("antioom_rows_failed", "Rows rejected", registry=self.registry)
        self.bytes = Counter("antioom_bytes", "Input bytes read", registry=self.registry)
        self.in_flight = Gauge(
            "antioom_imports_in_flight", "Imports in progress", registry=self.registry
        )
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and friends

    def observe(self, summary: Summary) -> None:
        self.imports.labels(status=summary.status).inc()
        self.rows_processed.inc(summary.processed)
        self.rows_failed.inc(summary.failed)
        self.bytes.inc(summary.bytes)
