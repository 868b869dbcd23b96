"""Prometheus metrics of a gateway process (and of the stages it runs), in one registry.

Each :class:`Metrics` owns its own :class:`prometheus_client.CollectorRegistry`, so several
gateways in one process (the tests start many) never share or clash over counters;
``GET /metrics`` renders it in the Prometheus text format.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The metric families; label values are topic, stage, feed and reason names."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.events_processed = Counter(
            "fieldstream_events_processed",
            "Records processed, per pipeline stage (or the gateway) and input topic",
            ["stage", "topic"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "fieldstream_consumer_lag_records",
            "Records on a topic not yet processed by a consumer (a stage or the gateway)",
            ["consumer", "topic"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "fieldstream_batch_seconds",
            "Wall time to process one batch, per stage",
            ["stage"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.ingested = Counter(
            "fieldstream_ingested_records",
            "Records offered to ingest by this process, by outcome (accepted or rejected)",
            ["outcome"],
            registry=r,
        )
        self.ws_clients = Gauge(
            "fieldstream_ws_clients",
            "Websocket clients connected, per feed",
            ["feed"],
            registry=r,
        )
        self.ws_frames = Counter(
            "fieldstream_ws_frames_sent",
            "Websocket frames sent, per feed and frame type",
            ["feed", "type"],
            registry=r,
        )
        self.ws_bytes = Counter(
            "fieldstream_ws_bytes_sent",
            "Bytes of websocket message payload sent, per feed",
            ["feed"],
            registry=r,
        )
        self.ws_refused = Counter(
            "fieldstream_ws_refused",
            "Websocket connections refused or closed by the gateway, per reason",
            ["reason"],
            registry=r,
        )
        self.ws_overflows = Counter(
            "fieldstream_ws_overflows",
            "Times a slow client's queue overflowed and its deltas were replaced by a snapshot",
            ["feed"],
            registry=r,
        )
        self.alerts_raised = Counter(
            "fieldstream_alerts_raised",
            "Late alerts raised (LateAlertRaised events seen by the gateway)",
            registry=r,
        )
        self.eta_error = Histogram(
            "fieldstream_eta_abs_error_seconds",
            "|arrival - P50| of the ETA in force, observed at arrivals: the ETA at departure "
            "(when=departure) and the last one before arrival (when=last)",
            ["when"],
            buckets=(30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200),
            registry=r,
        )
        self.eta_arrivals = Counter(
            "fieldstream_eta_arrivals",
            "Arrivals scored against an ETA, by whether they fell inside its P10-P90 window",
            ["when", "inside"],
            registry=r,
        )
        self.http_requests = Counter(
            "fieldstream_http_requests",
            "HTTP requests answered, per route and status",
            ["route", "status"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
