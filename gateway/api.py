"""The gateway's plain-HTTP side: the JSON API, health, metrics, the pages and their assets.

:class:`HttpApi` maps a request (method, path, query, headers) to a :class:`Reply`; the
server turns replies into HTTP responses on the same port as the websockets (websockets'
own ``process_request`` hook: every route here is a body-less GET, which is all it needs).

Routes (``GET`` and ``HEAD``; anything else is ``405``):

================================ ============================================ =============
``/`` and ``/map``               the dispatcher's live map (page)              open
``/track/{work_order}``          a customer's tracking page                    open
``/static/{file}``               the pages' scripts and styles                 open
``/roads.json``                  the streets to draw (gzip when accepted)      open
``/healthz``                     the process is up                             open
``/readyz``                      the live view has caught up with the log      open
``/metrics``                     Prometheus text format                        open
``/api/technicians``             technicians: status, job, position            dispatcher
``/api/work-orders/{id}``        a work order: state, ETA, alert, customer doc dispatcher
``/api/kpi``                     KPI tables (``day``, ``by``, ``group``, ...)   dispatcher
================================ ============================================ =============

The pages carry no data of their own: they open the websocket feeds with the token in their
URL (``?token=``), and the feeds check it. ``/api/*`` takes a dispatcher token as
``Authorization: Bearer ...`` or ``?token=``; a region-scoped token sees its region only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import unquote

import orjson

from gateway import tokens
from gateway.live import LiveView
from gateway.metrics import CONTENT_TYPE as METRICS_TYPE
from gateway.metrics import Metrics
from projections import DIMENSIONS, METRIC_BY_NAME, METRICS
from streams.projection_store import ProjectionStore

JSON = "application/json"
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
PAGE_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'"
)
"""The pages may load nothing from anywhere but this gateway (and open its websockets)."""

STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(status: int, doc: Any) -> Reply:
    return Reply(status, orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")


def error(status: int, reason: str, message: str) -> Reply:
    return json_reply(status, {"error": reason, "message": message})


def _static(name: str) -> bytes | None:
    """A file of gateway/static, or None (no path separators: nothing outside it)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    try:
        return resources.files("gateway").joinpath("static", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


class HttpApi:
    """Answers the plain-HTTP routes above from a live view."""

    def __init__(
        self,
        view: LiveView,
        metrics: Metrics,
        key: bytes,
        *,
        roads: tuple[bytes, bytes],
        ready: Callable[[], bool],
        kpi_store: Callable[[], ProjectionStore | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.view = view
        self.metrics = metrics
        self.key = key
        self.roads = roads
        self.ready = ready
        self.kpi_store = kpi_store
        self.clock = clock

    def handle(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> tuple[str, Reply]:
        """``(route name for metrics, reply)``."""
        if method not in {"GET", "HEAD"}:
            return "other", Reply(
                405,
                orjson.dumps({"error": "method_not_allowed", "message": "GET or HEAD only"}),
                headers=(("Allow", "GET, HEAD"),),
            )
        if path in {"/", "/map"}:
            return "page", self._page("map.html")
        if path.startswith("/track/") and len(path) > len("/track/"):
            return "page", self._page("track.html")
        if path.startswith("/static/"):
            name = path[len("/static/") :]
            body = _static(name)
            if body is None:
                return "static", error(404, "not_found", f"no such file {name}")
            suffix = name[name.rfind(".") :]
            return "static", Reply(200, body, STATIC_TYPES.get(suffix, "application/octet-stream"))
        if path == "/roads.json":
            raw, packed = self.roads
            if "gzip" in headers.get("accept-encoding", ""):
                return "roads", Reply(200, packed, JSON, (("Content-Encoding", "gzip"),))
            return "roads", Reply(200, raw, JSON)
        if path == "/healthz":
            return "healthz", json_reply(200, {"status": "ok"})
        if path == "/readyz":
            if self.ready():
                return "readyz", json_reply(200, {"status": "ready", "records": self.view.records})
            return "readyz", json_reply(
                503, {"status": "catching up", "records": self.view.records}
            )
        if path == "/metrics":
            return "metrics", Reply(200, self.metrics.render(), METRICS_TYPE)
        if path.startswith("/api/"):
            return self._api(path, query, headers)
        return "other", error(404, "not_found", f"no route {path}")

    def _page(self, name: str) -> Reply:
        body = _static(name)
        if body is None:
            return error(500, "missing_asset", f"{name} is not installed")
        return Reply(
            200,
            body,
            STATIC_TYPES[".html"],
            (("Content-Security-Policy", PAGE_POLICY), ("Cache-Control", "no-cache")),
        )

    def _api(
        self, path: str, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> tuple[str, Reply]:
        route = path.split("/")[2] if path.count("/") >= 2 else "api"
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else query.get("token")
        grant = tokens.verify(self.key, token, now=int(self.clock()))
        if isinstance(grant, tokens.TokenRefusal):
            return route, error(401, f"token_{grant.reason}", grant.message)
        if grant.scope != "dispatcher":
            return route, error(403, "scope_denied", "the API is for dispatcher tokens")
        region = grant.region
        if path == "/api/technicians":
            return route, json_reply(200, {"technicians": self._technicians(region)})
        if path.startswith("/api/work-orders/"):
            wid = unquote(path[len("/api/work-orders/") :])
            order = self.view.orders.get(wid)
            if order is None or (region is not None and order.region != region):
                return route, error(404, "not_found", f"no work order {wid} in your view")
            return route, json_reply(
                200,
                {
                    "work_order": order.snapshot,
                    "live": self.view.order_doc(wid),
                    "customer": self.view.customer_doc(wid),
                },
            )
        if path == "/api/kpi":
            return route, self._kpi(query, region)
        return route, error(404, "not_found", f"no route {path}")

    def _technicians(self, region: str | None) -> list[dict[str, Any]]:
        out = []
        for tid in sorted(self.view.technicians):
            doc = self.view.technician_doc(tid)
            if doc is None or (region is not None and doc["region"] != region):
                continue
            out.append({**doc, "position": self.view.position(tid)})
        return out

    def _kpi(self, query: Mapping[str, str], region: str | None) -> Reply:
        """The KPI tables from the projection store, filtered as ``fieldstream kpi`` filters
        them: ``day`` (``YYYY-MM-DD``, ``all``; default the latest day), ``by`` (all,
        technician, team, region, job-type), ``group`` and ``metrics`` (comma-separated).
        A region-scoped token reads its own region's rows only (``by=region``)."""
        by = (query.get("by") or query.get("dimension") or "all").replace("-", "_")
        if by not in DIMENSIONS:
            return error(400, "bad_request", f"by must be one of {', '.join(DIMENSIONS)}")
        group = query.get("group")
        if region is not None:
            if by != "region" or group not in {None, region}:
                return error(403, "scope_denied", f"a token for {region} reads by=region only")
            group = region
        names = [m.strip() for m in (query.get("metrics") or "").split(",") if m.strip()]
        unknown = [n for n in names if n not in METRIC_BY_NAME]
        if unknown:
            return error(400, "bad_request", f"unknown metric {', '.join(unknown)}")
        store = self.kpi_store()
        if store is None:
            return error(503, "no_projections", "no KPI tables yet: the pipeline has not run")
        days = store.days()
        day = query.get("day")
        if day is None:
            chosen = days[-1:]
        elif day == "all":
            chosen = days
        elif day in days:
            chosen = [day]
        else:
            return error(404, "not_found", f"no KPIs for {day}; days held: {', '.join(days)}")
        table: dict[tuple[str, str], dict[str, float | None]] = {}
        for d, _dim, g, metric, value in store.kpi_rows(chosen, by) if chosen else []:
            if group is None or g == group:
                table.setdefault((d, g), {})[metric] = value
        wanted = names or [m.name for m in METRICS]
        rows = [
            {"day": d, "by": by, "group": g, **{n: values.get(n) for n in wanted}}
            for (d, g), values in sorted(table.items())
        ]
        units = {n: METRIC_BY_NAME[n].unit for n in wanted}
        return json_reply(200, {"rows": rows, "days": days, "units": units})
