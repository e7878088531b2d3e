"""The API docs, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served offline.

FastAPI's own pages load their JavaScript and CSS from a CDN: without internet access they
are blank. Here the assets come from the ``fastapi-offline`` package (it ships Swagger UI 5's
``swagger-ui-bundle.js`` and ``swagger-ui.css`` and ReDoc's ``redoc.standalone.js``) and are
mounted at ``/docs/assets``. Every URL in the pages is relative (``openapi.json``,
``docs/assets/…``), so they work wherever the app is mounted (``app.mount("/antioom", …)``)
or proxied, with or without a ``root_path``.

ReDoc's side menu shows Redocly's logo from their CDN: ``redoc.standalone.js`` is served with
that one URL replaced by an empty inline image. Both pages also carry a Content-Security-Policy
that allows images from this server only, so no other image URL can reach a third party.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = "docs/assets"  # relative to the app's root, like the pages that use them
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
BLANK_IMAGE = b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"
POLICY = {"Content-Security-Policy": "img-src 'self' data: blob:"}


def assets_dir() -> Path:
    """The directory of the packaged Swagger UI and ReDoc assets."""
    return Path(str(files("fastapi_offline") / "static"))


@lru_cache(maxsize=1)
def redoc_script() -> bytes:
    """ReDoc's standalone bundle, its CDN logo replaced by an inline image (read once)."""
    return (assets_dir() / "redoc.standalone.js").read_bytes().replace(REDOC_LOGO, BLANK_IMAGE)


def add_docs(app: FastAPI, title: str) -> None:
    """Serve ``/docs``, ``/redoc`` and their assets from this process (no CDN). The app must
    have been created with ``docs_url=None, redoc_url=None``."""

    @app.get(f"/{ASSETS}/redoc.standalone.js", include_in_schema=False)
    async def redoc_js() -> Response:  # before the mount, which would serve the original
        return Response(redoc_script(), media_type="text/javascript")

    app.mount(f"/{ASSETS}", StaticFiles(directory=assets_dir()), name="docs-assets")
    openapi = (app.openapi_url or "/openapi.json").lstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi,
            title=f"{title} — API docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            # no badge image from validator.swagger.io (it would also send it the spec's URL)
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )
        page.headers.update(POLICY)
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi,
            title=f"{title} — API reference",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(POLICY)
        return page
