"""The OpenAPI document says every answer the app really gives (found by the fuzz suite).

FastAPI documents its own 422 body (``HTTPValidationError``: ``loc``/``msg``/``type``) while
the app answers every error as :class:`api.schemas.ErrorBody`, and it does not know the
answers that come from outside a route: the body-size middleware (413), a body that is not
JSON or not UTF-8 (400), a dependency that is down (503), the staff check of the codec
endpoint (401/403). :func:`install` rewrites the generated document once, so generated
clients and ``tests/test_fuzz_api.py`` (schemathesis, response and status-code conformance)
see the truth.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.schemas import ErrorBody

__all__ = ["install"]

_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_METHODS = ("get", "post", "put", "patch", "delete")


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def _document(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model_schema in (
        ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        .get("$defs", {})
        .items()
    ):
        components.setdefault(name, model_schema)
    error_body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    error_body.pop("$defs", None)
    components["ErrorBody"] = error_body
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            responses["422"] = _error(
                responses.get("422", {}).get("description", "A field breaks a rule.")
            )
            if "requestBody" in operation:
                responses.setdefault("400", _error("The body is not valid JSON or UTF-8."))
                responses.setdefault("413", _error("The request body is too large."))
            responses.setdefault("503", _error("A dependency is unavailable; retry."))
            if path.startswith("/codec"):
                responses.setdefault("401", _error("Missing or bad staff credentials."))
                responses.setdefault("403", _error("Credentials outside their scope."))
                responses.setdefault("400", _error("A payload the codec cannot decode."))
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the corrected document (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    openapi_version=app.openapi_version,
                    summary=app.summary,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
