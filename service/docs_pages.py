"""/docs (Swagger UI) and /redoc with their scripts and styles served by the service itself, from the
fastapi-offline package: the pages work with no internet, and no CDN sees who reads them."""

from collections.abc import Callable
from functools import partial
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
ASSETS_DIR = files("fastapi_offline") / "static"
# The pages run their own inline start-up script; nothing else than this service may be reached. ReDoc's
# sidebar would fetch its maker's logo from a CDN: blocked here, it hides itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _page_of_own_assets(app: FastAPI, url: str, name: str, render: Callable[[], HTMLResponse]) -> None:
    """GET `url`: the page `render` draws, which may load nothing from outside this service."""

    async def page() -> HTMLResponse:
        response = render()
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    app.add_api_route(url, page, methods=["GET"], name=name, include_in_schema=False)


def install_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Create the app with `docs_url=None, redoc_url=None`; these pages replace FastAPI's CDN-backed ones."""
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = f"{docs_url}/oauth2-redirect"
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS_DIR)), name="docs-assets")
    swagger_ui = partial(
        get_swagger_ui_html,
        openapi_url=openapi_url,
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=oauth2_redirect_url,
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url="/static/favicon.svg",
        swagger_ui_parameters=app.swagger_ui_parameters,
    )
    redoc = partial(
        get_redoc_html,
        openapi_url=openapi_url,
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url="/static/favicon.svg",
        with_google_fonts=False,
    )
    _page_of_own_assets(app, docs_url, "swagger_ui", swagger_ui)
    _page_of_own_assets(app, redoc_url, "redoc", redoc)

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
