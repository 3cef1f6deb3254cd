"""Prometheus metrics for the dispatcher (served when dispatcher.metrics_address is set)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.hold_depth = Gauge("holdscan_hold_depth", "Files in Postfix's hold queue", registry=r)
        self.in_flight = Gauge("holdscan_in_flight", "Messages sent for scanning, no verdict yet",
                               registry=r)
        self.verdicts = Counter("holdscan_verdicts_total", "Verdicts applied",
                                ["verdict", "outcome"], registry=r)
        self.scan_latency = Histogram(
            "holdscan_scan_latency_seconds", "From submission to verdict", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
        self.attempts = Counter("holdscan_attempts_total", "Messages sent to workers", registry=r)
        self.errors = Counter("holdscan_errors_total", "Errors by kind", ["kind"], registry=r)

    def serve(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
