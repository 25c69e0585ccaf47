"""Prometheus metrics of one workbench app (its own registry, so several apps in one process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("pynomaly_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("pynomaly_http_request_seconds", "HTTP request latency", ["route"], registry=self.registry)
        self.scored_rows = Counter("pynomaly_scored_rows", "rows scored through the API", ["model"], registry=self.registry)
        self.alerts = Counter("pynomaly_alerts", "scored rows flagged as anomalies through the API", ["model"], registry=self.registry)
        self.labels = Counter("pynomaly_labels", "labels given by analysts", ["label"], registry=self.registry)
