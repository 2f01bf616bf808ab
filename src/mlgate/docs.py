"""Swagger UI and ReDoc served from local assets (fastapi-offline's copies), with a
Content-Security-Policy: model servers often run where no CDN is reachable."""

from __future__ import annotations

import json
import secrets
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from mlgate.deps import Public
from mlgate.middleware import security_headers_for_docs

ASSETS_PATH = "/docs/assets"
TOKEN_URL = "/api/v1/auth/token"


def _assets_dir() -> Path:
    return Path(str(resources.files("fastapi_offline") / "static"))


def install_docs(app: FastAPI) -> None:
    app.mount(ASSETS_PATH, StaticFiles(directory=_assets_dir()), name="docs-assets")
    router = APIRouter(include_in_schema=False)

    @router.get("/docs", dependencies=[Public()])
    async def swagger_ui() -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        config = {
            "url": "/openapi.json",
            "dom_id": "#swagger-ui",
            "oauth2RedirectUrl": "/docs/oauth2-redirect",
            "persistAuthorization": False,
            "deepLinking": True,
        }
        html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{app.title} - API docs</title>
<link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
<link rel="icon" href="{ASSETS_PATH}/favicon.png"></head>
<body><div id="swagger-ui"></div>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script nonce="{nonce}">
const cfg = {json.dumps(config)};
cfg.presets = [SwaggerUIBundle.presets.apis];
window.ui = SwaggerUIBundle(cfg);
</script></body></html>"""
        return HTMLResponse(html, headers=security_headers_for_docs(nonce))

    @router.get("/docs/oauth2-redirect", dependencies=[Public()])
    async def swagger_redirect() -> HTMLResponse:
        page = get_swagger_ui_oauth2_redirect_html()
        nonce = secrets.token_urlsafe(16)
        body = bytes(page.body).decode().replace("<script>", f'<script nonce="{nonce}">')
        return HTMLResponse(body, headers=security_headers_for_docs(nonce))

    @router.get("/redoc", dependencies=[Public()])
    async def redoc() -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{app.title} - ReDoc</title>
<link rel="icon" href="{ASSETS_PATH}/favicon.png"></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="{ASSETS_PATH}/redoc.standalone.js"></script></body></html>"""
        return HTMLResponse(html, headers=security_headers_for_docs(nonce))

    app.include_router(router)
