"""Prometheus metrics of the HTTPS service, without PHI.

Labels are bounded and carry no identifiers: the HTTP method, the *route
template* (``/dicomweb/studies/{study}/series``, never a UID or a query
string; unmatched paths are counted as ``unmatched``) and the status code.
Each app has its own registry, so several apps in one process (tests) do not
collide.

``/metrics`` reveals activity levels, not data, but is still protected: only a
principal the policies permit ``metrics-read`` may read it (by default the
``admin`` and ``security_officer`` roles).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

UNMATCHED = "unmatched"


class WebMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "dicomguard_http_requests", "HTTP requests by method, route template and status",
            ("method", "route", "status"), registry=self.registry,
        )
        self.latency = Histogram(
            "dicomguard_http_request_duration_seconds", "Time to the end of the response, by method and route template",
            ("method", "route"), registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.stow_instances = Counter(
            "dicomguard_stow_instances", "Instances received by STOW-RS, by outcome", ("outcome",), registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
