"""OpenTelemetry set-up for every process: traces, product metrics, Temporal SDK metrics.

Traces go from the API through the Temporal client, each workflow task and activity, to the SQL
(``TracingInterceptor`` + asyncpg and FastAPI instrumentation). They are exported only when the
standard OTLP variables say where to (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; ``OTEL_TRACES_EXPORTER=console`` for a terminal): with
none set nothing leaves the process. Spans and metric attributes carry ids and rule names only,
never PHI; FastAPI span URLs are reduced to their route template, so tokens in paths and query
strings stay out of the trace backend.

Nothing is configured at import: processes call :func:`setup_tracing` (and
:func:`setup_metrics`) once at start-up and :func:`shutdown_telemetry` before exiting.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import temporalio.client
import temporalio.runtime
from opentelemetry import metrics, trace
from opentelemetry.metrics import (
    CallbackOptions,
    Counter,
    Histogram,
    Meter,
    ObservableGauge,
    Observation,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from temporalio.contrib.opentelemetry import TracingInterceptor

METER_NAME = "pore_journey"
OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTLP_METRICS_ENDPOINT = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
# Probes and scrapes would drown real requests in spans.
FASTAPI_EXCLUDED_URLS = "/healthz,/readyz,/metrics"

_lock = threading.Lock()
_tracer_provider: TracerProvider | None = None
_attached_exporters: list[SpanExporter] = []
_meter_provider: MeterProvider | None = None
_runtimes: dict[str, temporalio.runtime.Runtime] = {}


def span_exporter_from_env(environ: Mapping[str, str] | None = None) -> SpanExporter | None:
    """The span exporter the standard OTel variables ask for, or None (export nothing).

    ``OTEL_TRACES_EXPORTER=console`` → console; ``none`` → nothing; otherwise OTLP over HTTP
    when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as is) or ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (``/v1/traces`` appended) is set. Other ``OTEL_EXPORTER_OTLP_*`` settings (headers,
    timeout, certificates) are read by the exporter itself.
    """
    env = os.environ if environ is None else environ
    kind = env.get(TRACES_EXPORTER, "otlp").strip().lower()
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    endpoint = env.get(OTLP_TRACES_ENDPOINT, "").strip()
    if not endpoint and env.get(OTLP_ENDPOINT, "").strip():
        endpoint = env[OTLP_ENDPOINT].strip().rstrip("/") + "/v1/traces"
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint)


def setup_tracing(service_name: str, *, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install the process's tracer provider (once) and return it.

    The first call creates a provider with resource ``service.name=<service_name>`` and makes it
    the global one; the exporter comes from the environment (:func:`span_exporter_from_env`,
    behind a ``BatchSpanProcessor``) unless ``exporter`` is given. Later calls return the same
    provider (their ``service_name`` is ignored) and attach ``exporter``, if given and not
    attached yet, with a ``SimpleSpanProcessor``: tests call this repeatedly with an in-memory
    exporter. A global SDK provider installed by someone else (e.g. ``opentelemetry-instrument``)
    is adopted rather than replaced, since OpenTelemetry allows setting it only once.
    """
    global _tracer_provider
    with _lock:
        if _tracer_provider is None:
            current = trace.get_tracer_provider()
            if isinstance(current, TracerProvider):
                _tracer_provider = current
            else:
                provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
                if exporter is None:
                    from_env = span_exporter_from_env()
                    if from_env is not None:
                        provider.add_span_processor(BatchSpanProcessor(from_env))
                trace.set_tracer_provider(provider)
                _tracer_provider = provider
        if exporter is not None and not any(e is exporter for e in _attached_exporters):
            _tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
            _attached_exporters.append(exporter)
        return _tracer_provider


def setup_metrics(service_name: str, *, reader: MetricReader | None = None) -> MeterProvider:
    """Install the process's meter provider (once) and return it.

    Product metrics (:func:`get_metrics`) are exported over OTLP/HTTP every 60 s when
    ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, or read
    by ``reader`` when given; otherwise they are recorded nowhere. A meter provider takes its
    readers at creation, so later calls return the first provider unchanged: tests that read
    metrics build :class:`Metrics` over their own provider instead.
    """
    global _meter_provider
    with _lock:
        if _meter_provider is not None:
            return _meter_provider
        readers: list[MetricReader] = []
        if reader is not None:
            readers.append(reader)
        elif os.environ.get(OTLP_METRICS_ENDPOINT) or os.environ.get(OTLP_ENDPOINT):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        provider = MeterProvider(
            metric_readers=readers, resource=Resource.create({SERVICE_NAME: service_name})
        )
        metrics.set_meter_provider(provider)
        _meter_provider = provider
        return provider


def shutdown_telemetry() -> None:
    """Flush and stop the providers this module installed; call once before the process exits.

    Spans batched for export are sent (bounded by the exporters' timeouts). Safe to call when
    nothing was set up.
    """
    with _lock:
        if _tracer_provider is not None:
            _tracer_provider.force_flush()
            _tracer_provider.shutdown()
        if _meter_provider is not None:
            _meter_provider.shutdown()


def temporal_interceptors() -> list[temporalio.client.Interceptor]:
    """Interceptors for ``Client.connect`` (workers inherit them from the client).

    One trace runs from the caller's span through ``StartWorkflow``, each ``RunWorkflow`` task,
    ``StartActivity`` and ``RunActivity``. The tracer is the global one, resolved lazily, so
    this may be called before :func:`setup_tracing`.
    """
    return [TracingInterceptor()]


def temporal_runtime(prometheus_bind: str | None) -> temporalio.runtime.Runtime | None:
    """A Temporal runtime serving SDK metrics on ``http://<prometheus_bind>/metrics``.

    Args:
        prometheus_bind: ``host:port`` to listen on (``METRICS_PROMETHEUS_BIND``), or None for
            the SDK's default runtime (no metrics endpoint).

    Returns:
        None when ``prometheus_bind`` is empty; otherwise one runtime per address for the life
        of the process (a second call returns the same runtime: the port can be bound once).
        Pass it to every ``Client.connect`` of the process.

    Raises:
        RuntimeError: the address cannot be bound (raised by the SDK core).
    """
    if not prometheus_bind:
        return None
    with _lock:
        runtime = _runtimes.get(prometheus_bind)
        if runtime is None:
            runtime = temporalio.runtime.Runtime(
                telemetry=temporalio.runtime.TelemetryConfig(
                    metrics=temporalio.runtime.PrometheusConfig(
                        bind_address=prometheus_bind, durations_as_seconds=True
                    )
                )
            )
            _runtimes[prometheus_bind] = runtime
        return runtime


def instrument_asyncpg() -> None:
    """Trace every asyncpg query (idempotent).

    Spans carry the SQL text with its ``$n`` placeholders, never the parameter values
    (``capture_parameters`` stays off: parameters are patients' data).
    """
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    with _lock:
        # The instrumentor is a singleton that remembers whether it is active.
        instrumentor = AsyncPGInstrumentor(capture_parameters=False)
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def instrument_fastapi(app: Any) -> None:
    """Trace every request of a FastAPI app (idempotent per app).

    Health probes and ``/metrics`` are not traced; the ASGI send/receive sub-spans are left
    out; the span's URL attributes are replaced by the route template (``/p/{token}``), so
    per-journey tokens and query strings never reach the trace backend.
    """
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        return
    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls=FASTAPI_EXCLUDED_URLS,
        exclude_spans=["receive", "send"],
        server_request_hook=_route_template_hook(app),
    )


_URL_ATTRIBUTES_WITH_PATH = ("http.target", "url.path")
_URL_ATTRIBUTES_FULL = ("http.url", "url.full")
_URL_ATTRIBUTES_QUERY = ("url.query",)


def _route_template_hook(app: Any) -> Callable[[trace.Span, dict[str, Any]], None]:
    from starlette.routing import Match

    def hook(span: trace.Span, scope: dict[str, Any]) -> None:
        if not span.is_recording():
            return
        recorded: Mapping[str, Any] = getattr(span, "attributes", None) or {}
        # The instrumentation's own route resolution first: FastAPI >= 0.165 keeps included
        # routers as lazy ``_IncludedRouter`` entries without a ``path``, which the scan below
        # cannot see into (every URL became "unmatched").
        template = str(recorded.get("http.route") or "unmatched")
        if template == "unmatched":
            for route in getattr(app, "routes", ()):
                match, _ = route.matches(scope)
                if match == Match.FULL:
                    template = getattr(route, "path", template)
                    break
        for name in _URL_ATTRIBUTES_WITH_PATH:
            if name in recorded:
                span.set_attribute(name, template)
        for name in _URL_ATTRIBUTES_FULL:
            if name in recorded:
                span.set_attribute(name, template)
        for name in _URL_ATTRIBUTES_QUERY:
            if name in recorded:
                span.set_attribute(name, "")

    return hook


StageCounts = Mapping[str, int]


class Metrics:
    """The product's metrics, recorded through the OpenTelemetry metrics API.

    Attributes are ids and rule names only (never PHI). Instruments:

    - ``journeys_by_stage`` (observable gauge, attribute ``stage``): open journeys per stage,
      read at each collection from :meth:`update_journeys_by_stage` or a source set with
      :meth:`set_journeys_by_stage_source`. A stage seen once and absent later reports 0.
    - ``notifications_sent`` / ``notifications_failed`` (counters; ``channel``, ``kind``).
    - ``webhook_latency_seconds`` (histogram, s; ``integration``, ``outcome``).
    - ``refused_requests`` (counter; ``rule``, the ``ApplicationError.type`` or validation rule).
    - ``journeys_stuck`` (observable gauge): open journeys whose workflow task keeps failing,
      from :meth:`update_journeys_stuck` (``worker.stuck.refresh_journeys_stuck``).
    """

    def __init__(self, meter: Meter) -> None:
        """Create the instruments on ``meter``."""
        self._stage_counts: dict[str, int] = {}
        self._stage_source: Callable[[], StageCounts] | None = None
        self._stages_seen: set[str] = set()
        self.notifications_sent: Counter = meter.create_counter(
            "notifications_sent", unit="{notification}", description="Notifications delivered."
        )
        self.notifications_failed: Counter = meter.create_counter(
            "notifications_failed",
            unit="{notification}",
            description="Notification attempts that failed (each failed attempt counts).",
        )
        self.webhook_latency_seconds: Histogram = meter.create_histogram(
            "webhook_latency_seconds",
            unit="s",
            description="Time to handle an integration webhook, signature check to answer.",
        )
        self.refused_requests: Counter = meter.create_counter(
            "refused_requests",
            unit="{request}",
            description="Requests refused by a protocol rule or validation, by rule.",
        )
        self.journeys_by_stage: ObservableGauge = meter.create_observable_gauge(
            "journeys_by_stage",
            callbacks=[self._observe_stages],
            unit="{journey}",
            description="Open journeys per stage, from the read model.",
        )
        self._stuck: int | None = None
        self.journeys_stuck: ObservableGauge = meter.create_observable_gauge(
            "journeys_stuck",
            callbacks=[self._observe_stuck],
            unit="{journey}",
            description="Open journeys whose workflow task keeps failing (a workflow bug).",
        )

    def record_notification_sent(self, channel: str, kind: str) -> None:
        """Count one delivered notification (``kind`` is the template name, e.g. ``reminder``)."""
        self.notifications_sent.add(1, {"channel": channel, "kind": kind})

    def record_notification_failed(self, channel: str, kind: str) -> None:
        """Count one failed delivery attempt."""
        self.notifications_failed.add(1, {"channel": channel, "kind": kind})

    def observe_webhook_latency(self, seconds: float, integration: str, outcome: str) -> None:
        """Record one webhook's handling time; ``outcome`` is e.g. ``accepted``, ``duplicate``,
        ``bad_signature``, ``unavailable``."""
        self.webhook_latency_seconds.record(
            seconds, {"integration": integration, "outcome": outcome}
        )

    def record_refused(self, rule: str) -> None:
        """Count one refused request by the rule that refused it (e.g. ``RescheduleTooSoon``)."""
        self.refused_requests.add(1, {"rule": rule})

    def update_journeys_by_stage(self, counts: StageCounts) -> None:
        """Replace the stage snapshot the gauge reports (e.g. from a periodic read-model query).

        Safe to call from the event loop while a metric reader thread collects.
        """
        self._stage_counts = dict(counts)

    def set_journeys_by_stage_source(self, source: Callable[[], StageCounts] | None) -> None:
        """Read stage counts from ``source`` at each collection instead of the snapshot.

        ``source`` runs on the metric reader's thread: it must be quick, thread-safe and not
        touch the event loop (return a cached value; do not query the database from it).
        """
        self._stage_source = source

    def _observe_stages(self, options: CallbackOptions) -> Iterable[Observation]:
        source = self._stage_source
        counts = dict(source()) if source is not None else self._stage_counts
        self._stages_seen.update(counts)
        return [
            Observation(counts.get(stage, 0), {"stage": stage})
            for stage in sorted(self._stages_seen)
        ]

    def update_journeys_stuck(self, count: int) -> None:
        """Replace the number of stuck journeys the gauge reports (nothing until first set)."""
        self._stuck = count

    def _observe_stuck(self, options: CallbackOptions) -> Iterable[Observation]:
        stuck = self._stuck
        return [] if stuck is None else [Observation(stuck)]


_metrics: Metrics | None = None


def get_metrics() -> Metrics:
    """The process's :class:`Metrics` on the global meter (created on first use).

    Instruments made before :func:`setup_metrics` start recording once it runs (the API's
    proxy meter); without it they record nothing.
    """
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = Metrics(metrics.get_meter(METER_NAME))
        return _metrics
