"""Prometheus metrics and the structured access log.

Each app owns one `Metrics` (its own CollectorRegistry, so several apps in one process,
as in tests, never share counters); `build_context` puts it on `ctx.metrics`. Other
domains record through the module-level helpers below, which need no context:

    from mlgate import metrics
    metrics.observe_prediction("iris", rows=3)   # after a successful prediction
    metrics.observe_batch("iris", size=17)       # rows of one batched runtime call
    metrics.login_failure()                      # each refused password login
    metrics.lockout()                            # each login refused by a lockout
    metrics.set_audit_queue_depth(lambda: queue.qsize())  # once, at writer start

The helpers record into the most recently started app's registry: a server process
runs one app, so this is exact in production. Labels are bounded: route templates
(never raw paths), status codes, and registered model names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import Scope

from mlgate.auth.principal import principal_from_scope
from mlgate.context import META_KEY, RequestMeta

access_log = logging.getLogger("mlgate.access")

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
UNMATCHED = "unmatched"


class Metrics:
    """The collectors of one app, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mlgate_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "mlgate_http_request_duration_seconds",
            "Time from request start to the end of the answer, by route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.login_failures = Counter(
            "mlgate_login_failures", "Password logins refused for bad credentials.", registry=r
        )
        self.lockouts = Counter(
            "mlgate_login_lockouts", "Login attempts refused by a lockout.", registry=r
        )
        self.predictions = Counter(
            "mlgate_predictions", "Successful prediction requests, by model.", ["model"],
            registry=r,
        )  # fmt: skip
        self.rows = Counter(
            "mlgate_prediction_rows", "Rows predicted, by model.", ["model"], registry=r
        )
        self.batch_sizes = Histogram(
            "mlgate_batch_size_rows",
            "Rows per runtime call after dynamic batching, by model.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.audit_queue_depth = Gauge(
            "mlgate_audit_queue_depth", "Audit events waiting for group commit.", registry=r
        )
        self._audit_depth: Callable[[], float] | None = None
        self.audit_queue_depth.set_function(self._read_audit_depth)

    def _read_audit_depth(self) -> float:
        if self._audit_depth is None:
            return 0.0
        try:
            return float(self._audit_depth())
        except Exception:  # a gauge callback must never break a scrape
            return 0.0

    def set_audit_queue_depth(self, depth: Callable[[], float]) -> None:
        self._audit_depth = depth

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def observe_prediction(self, model: str, rows: int) -> None:
        self.predictions.labels(model).inc()
        self.rows.labels(model).inc(rows)

    def observe_batch(self, model: str, size: int) -> None:
        self.batch_sizes.labels(model).observe(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_active: list[Metrics] = []


def activate(m: Metrics) -> None:
    """Make `m` the target of the module-level helpers (called at app start)."""
    _active.append(m)


def deactivate(m: Metrics) -> None:
    if m in _active:
        _active.remove(m)


def current() -> Metrics | None:
    return _active[-1] if _active else None


def observe_prediction(model: str, rows: int) -> None:
    """Count one successful prediction request of `rows` rows on `model`."""
    if (m := current()) is not None:
        m.observe_prediction(model, rows)


def observe_batch(model: str, size: int) -> None:
    """Record the rows of one runtime call (after batching) on `model`."""
    if (m := current()) is not None:
        m.observe_batch(model, size)


def login_failure() -> None:
    """Count one password login refused for bad credentials."""
    if (m := current()) is not None:
        m.login_failures.inc()


def lockout() -> None:
    """Count one login attempt refused because the account or IP is locked out."""
    if (m := current()) is not None:
        m.lockouts.inc()


def set_audit_queue_depth(depth: Callable[[], float]) -> None:
    """Register the callback the audit-queue-depth gauge reads at each scrape."""
    if (m := current()) is not None:
        m.set_audit_queue_depth(depth)


# ---- per request: metrics and access log ---------------------------------------------


def route_template(scope: Scope) -> str:
    """The matched route's template (`/api/v1/models/{name}/predict`), never the raw
    path, whose values are unbounded; "unmatched" when no route matched."""
    effective = scope.get("fastapi", {}).get("effective_route_context")
    template = getattr(effective, "path_format", None)
    if isinstance(template, str) and template:
        return template
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) and template else UNMATCHED


def on_finish(scope: Scope, status: int, seconds: float) -> None:
    """RequestContextMiddleware hook: metrics plus one access-log line per request.

    The line carries request id, principal, method, route template, status and
    duration; never headers, query strings or bodies."""
    route = route_template(scope)
    method = str(scope.get("method", "-"))
    app: Any = scope.get("app")
    ctx = getattr(getattr(app, "state", None), "ctx", None)
    m = getattr(ctx, "metrics", None)
    if isinstance(m, Metrics):
        m.observe_request(method, route, status, seconds)
    if not access_log.isEnabledFor(logging.INFO):
        return
    meta = scope.get(META_KEY)
    principal = principal_from_scope(scope)
    request_id = meta.request_id if isinstance(meta, RequestMeta) else "-"
    who = principal.username if principal is not None else "-"
    duration_ms = round(seconds * 1000, 2)
    access_log.info(
        "%s %s %d %.1fms user=%s rid=%s",
        method,
        route,
        status,
        duration_ms,
        who,
        request_id,
        extra={
            "request_id": request_id,
            "principal": who,
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
        },
    )
