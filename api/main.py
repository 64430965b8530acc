"""The FastAPI app: ``create_app(settings)`` builds it; nothing is created at import.

Run it with ``uvicorn --factory api.main:create_app`` (or ``journey api``). The lifespan
connects to Temporal (on first use if Temporal is not up yet: the API answers 503 until it is)
and opens the asyncpg pool on ``DATABASE_URL``, or on the embedded server like the worker does,
applies pending migrations, and closes everything on shutdown.

Every error body is ``{"detail": [{"field"?, "rule", "message"}], "error"?}``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pydantic
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.converter import PayloadCodec

from api import schemas
from api.access import install as install_access
from api.access.enforce import enforce
from api.codec_server import build_codec_router
from api.deps import get_codec_staff
from api.limits import BodySizeLimit
from api.openapi_doc import install as install_openapi
from api.photos import MULTIPART_OVERHEAD, PhotoSettings
from api.routes import (
    booking,
    calendar,
    clinical,
    fhir,
    health,
    integrations,
    journeys,
    languages,
    me,
    messaging,
    plans,
    scheduling,
    webhooks_admin,
)
from api.service import (
    FactKept,
    InvalidRequest,
    JourneyService,
    RequestRefused,
    ServiceError,
    ServiceUnavailable,
    TemporalConnector,
)
from api.web import clinical_pages as web_clinical
from api.web import messaging_pages as web_messaging
from api.web import reports as web_reports
from api.web import routes as web_pages
from worker.client import build_codec
from worker.database import create_pool, database_url, migrate
from worker.settings import Settings, get_settings
from worker.telemetry import get_metrics, instrument_fastapi, temporal_interceptors

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def _operation_id(route: APIRoute) -> str:
    """Stable OpenAPI operation ids for generated clients: ``<tag>-<function name>``."""
    tag = route.tags[0] if route.tags else "default"
    return f"{tag}-{route.name}"


def _error(
    status_code: int,
    items: list[dict[str, Any]],
    *,
    error: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"detail": items}
    if error is not None:
        body["error"] = error
    return JSONResponse(body, status_code=status_code, headers=headers)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if isinstance(exc, InvalidRequest):
        # Workflow refusals are counted by the service (it sees them from the CLI too).
        get_metrics().record_refused(exc.rule)
    if isinstance(exc, FactKept):
        # Not applied, not lost: kept for staff (docs/api.md, "Facts the journey cannot apply").
        body = schemas.FactKeptBody(
            detail=[schemas.ErrorItem(**r.model_dump()) for r in exc.reasons],
            error=exc.error_type,
            outcome="kept_for_staff",
            anomaly_id=exc.result.anomaly_id,
            stage=exc.result.stage,
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=exc.status_code)
    if isinstance(exc, RequestRefused):
        return _error(
            exc.status_code,
            [r.model_dump() for r in exc.reasons],
            error=exc.error_type,
        )
    if isinstance(exc, InvalidRequest):
        return _error(
            exc.status_code, [{"field": exc.field, "rule": exc.rule, "message": exc.message}]
        )
    if isinstance(exc, ServiceUnavailable):
        return _error(
            exc.status_code,
            [{"rule": exc.rule, "message": exc.message}],
            headers={"Retry-After": str(exc.retry_after)},
        )
    return _error(exc.status_code, [{"rule": exc.rule, "message": exc.message}])


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    items = [
        {
            "field": ".".join(str(p) for p in e.get("loc", ())),
            "rule": e.get("type", "invalid"),
            "message": e.get("msg", "invalid"),
        }
        for e in exc.errors()
    ]
    return _error(422, items)


async def _message_error(request: Request, exc: Exception) -> JSONResponse:
    # A workflow message refused a value the API schema let through (the two sets of bounds
    # drifted): still the caller's 422, never a 500. Logged: the API schema needs the bound.
    assert isinstance(exc, pydantic.ValidationError)
    logger.warning("a workflow message refused a request the API accepted: %s", exc.title)
    items = [
        {
            "field": ".".join(["body", *(str(p) for p in e.get("loc", ()))]),
            "rule": e.get("type", "invalid"),
            "message": e.get("msg", "invalid"),
        }
        for e in exc.errors(include_url=False)
    ]
    return _error(422, items)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    items = (
        detail
        if isinstance(detail, list)
        else [{"rule": f"http_{exc.status_code}", "message": str(detail)}]
    )
    return _error(exc.status_code, items, headers=getattr(exc, "headers", None))


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    # A database error that escaped the service (e.g. while checking a token) is an outage.
    logger.warning("database unavailable: %s", type(exc).__name__)
    return await _service_error(request, ServiceUnavailable("The database is not reachable."))


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API.

    Args:
        settings: The settings to use; ``get_settings()`` (the environment) when omitted.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The tracing interceptor continues the request's span into StartWorkflow/updates.
        connector = TemporalConnector(settings, interceptors=temporal_interceptors())
        try:
            await connector.get()
        except ServiceUnavailable:
            logger.warning("Temporal is not reachable yet; answering 503 until it is")
        dsn, embedded = await database_url(settings)
        pool = await create_pool(
            dsn, min_size=settings.database_pool_min, max_size=settings.database_pool_max
        )
        try:
            await migrate(pool)
            app.state.temporal = connector
            app.state.pool = pool
            app.state.service = JourneyService(connector, pool, settings)
            yield
        finally:
            await pool.close()
            if embedded is not None:
                embedded.stop()

    app = FastAPI(
        title="Pore journey API",
        summary="Patient journeys for laser facial pore contraction, on Temporal.",
        version="0.1.0",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        # Every route's permission and clinic scope (api/access/permissions.py), before it runs.
        dependencies=[Depends(enforce)],
    )
    app.state.settings = settings
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(pydantic.ValidationError, _message_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for db_error in (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError):
        app.add_exception_handler(db_error, _database_down)

    for router in (
        health.router,
        clinical.router,  # consent, photos, outcomes (issue 19; before the journeys' routes)
        journeys.router,
        integrations.router,
        booking.router,  # a clinic's own booking system (docs/booking-systems.md)
        messaging.router,  # the SMS provider's delivery statuses (docs/messaging.md)
        languages.router,  # the patient's language, a clinic's default (docs/languages.md)
        me.router,
        plans.router,
        scheduling.router,  # resources, free times, preferences (docs/scheduling.md)
        fhir.router,  # /fhir/R4 (docs/integrations.md)
        calendar.router,  # .ics files and calendar feeds
        webhooks_admin.router,  # /api/admin: webhook subscribers, dead letters, external ids
        web_pages.router,  # the dashboard and the patient page (api/web)
        web_clinical.router,  # consent, photos and outcomes on the pages (issue 19)
        web_messaging.router,  # failed deliveries, opt-outs and replies per clinic (issue 18)
        web_reports.router,  # /reports: clinic reports and CSV exports (docs/reports.md)
    ):
        app.include_router(router)

    # The remote codec server for the Temporal UI/CLI, staff only (api/codec_server.py). It is
    # mounted even without keys so a misconfigured UI gets a clear 503, not a bare 404.
    codec = build_codec(settings)

    def get_codec() -> PayloadCodec:
        if codec is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail=[
                    {
                        "rule": "codec_not_configured",
                        "message": "No payload codec keys are configured on this API "
                        "(JOURNEY_CODEC_KEYS); Temporal payloads are not encrypted here.",
                    }
                ],
            )
        return codec

    app.include_router(
        build_codec_router(
            get_codec, get_codec_staff, allowed_origins=settings.journey_codec_cors_origins
        )
    )
    install_access(app)  # sign-in through the provider, the access log (api/access)
    install_openapi(app)  # 422/400/413/503 as the app answers them (api/openapi_doc.py)
    # Outermost but tracing: no body over the limit is read into memory or reaches a route.
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.journey_max_body_bytes,
        prefix_limits={
            "/codec": settings.journey_codec_max_body_bytes,
            # Photo uploads (api/photos.py): the photo limit plus the multipart fields.
            "/api/photos/": PhotoSettings().max_bytes + MULTIPART_OVERHEAD,
            "/photos/": PhotoSettings().max_bytes + MULTIPART_OVERHEAD,
        },
    )
    # One server span per request (probes excluded), URLs reduced to route templates: tokens in
    # paths never reach the trace backend. A no-op tracer without setup_tracing (tests, CLI).
    instrument_fastapi(app)
    return app
