"""The ASGI application of `miss-screen serve`: one Screener for the process's lifetime.

Every route reads its settings from `ServiceConfig` (on `app.state.config`), never from the
command line or the environment, so tests build the same app that `serve` runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.routing import Match

from engine import __version__
from engine.screener import Screener
from engine.service.limits import MAX_BODY_BYTES


@dataclass(frozen=True)
class ServiceConfig:
    """What one service process serves with. The Screener is shared by every request."""

    screener: Screener
    dev: bool = False  # accept the CDS Hooks sandbox's public key; say so on every page
    cors_origins: tuple[str, ...] = ()  # exact origins allowed to call the CDS Hooks endpoints
    feedback_log: Path | None = None  # JSON lines of CDS Hooks card feedback; None: kept in memory
    extra: dict[str, object] = field(default_factory=dict)
    # CDS Hooks JWT issuers trusted: iss -> JWKS URL or the JSON text of a JWKS file (auth.py)
    trusted_issuers: Mapping[str, str] = field(default_factory=dict)
    audiences: tuple[str, ...] = ()  # a token's aud must be one of these (else the URL called)
    public_url: str | None = None  # the service's URL as callers see it (links, aud); None: Host
    max_body_bytes: int = MAX_BODY_BYTES  # a larger request body is refused (413)


def config_of(request: Request) -> ServiceConfig:
    """The service's configuration (a FastAPI dependency)."""
    config: ServiceConfig = request.app.state.config
    return config


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> str:
    """The methods every route of this path takes, for a 405's Allow header.

    Starlette names only the first route whose path matched (GET / and POST / are two routes).
    """
    methods = [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.routes
        )
    ]
    return ", ".join(methods)


def create_app(config: ServiceConfig) -> FastAPI:
    """The web form at `/` and the CDS Hooks service at `/cds-services`, on one Screener."""
    app = FastAPI(
        title="miss-screen",
        version=__version__,
        description="Screening aid for a conversation about minimally invasive spine surgery, "
        "never an order to operate.",
        # the interactive API pages run scripts from a CDN on this origin: a developer's aid,
        # served with --dev only (the OpenAPI JSON itself stays at /openapi.json)
        docs_url="/docs" if config.dev else None,
        redoc_url="/redoc" if config.dev else None,
    )
    app.state.config = config
    from engine.service.cds import install  # CDS Hooks: routes, errors, CORS, request guard
    from engine.service.form import router as form_router  # form.py reads ServiceConfig from here

    install(app, config)
    app.include_router(form_router)
    return app
