"""Staff access for a clinic chain (issue 16): OpenID Connect sign-in, API tokens, clinic
scoping, the permission table and the access log. See docs/security.md ("Staff access").

``install(app)`` adds the sign-in and access-log routes and the answers of a refusal; the
check itself, :func:`api.access.enforce.enforce`, is an app-wide dependency of ``create_app``.
"""

from __future__ import annotations

from typing import Any

import jinja2
from fastapi import FastAPI

from api.access import oidc, pages
from api.access.config import AccessSettings
from api.access.enforce import install_handlers

__all__ = ["install"]


@jinja2.pass_context
def _may(context: Any, permission: str) -> bool:
    """In a template: ``{% if may("journey.pause") %}``: the member holds the permission."""
    request = context.get("request")
    principal = getattr(getattr(request, "state", None), "principal", None)
    return bool(principal is not None and permission in principal.permissions)


def install(app: FastAPI, access: AccessSettings | None = None) -> None:
    """Routes, refusal answers and the template helper; ``app.state.access`` the settings."""
    from api.web.routes import TEMPLATES  # the pages import api.access

    app.state.access = access or AccessSettings()
    TEMPLATES.env.globals["may"] = _may
    app.include_router(oidc.router)
    app.include_router(pages.page_router)
    app.include_router(pages.api_router)
    install_handlers(app)
