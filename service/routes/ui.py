"""The browser side: the try-it page at ``/`` and the OpenAPI docs at ``/docs``.

Both are served from files in the package (``service/templates``,
``service/static``), so they work on a machine without internet: FastAPI's
default docs page loads Swagger UI from a CDN and is blank offline.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

PACKAGE_DIR = Path(__file__).resolve().parents[1]
STATIC_DIR = PACKAGE_DIR / "static"
TEMPLATES_DIR = PACKAGE_DIR / "templates"

SWAGGER_PARAMETERS = {"validatorUrl": None, "persistAuthorization": False, "tryItOutEnabled": False}
"""Swagger UI settings. ``validatorUrl: None``: its default posts the schema to validator.swagger.io."""

templates = Jinja2Templates(directory=TEMPLATES_DIR)
router = APIRouter(include_in_schema=False)


def _prefix(request: Request) -> str:
    # Behind a proxy that mounts the app under a path, links must carry that path.
    return request.scope.get("root_path", "").rstrip("/")


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    app = request.app
    settings = app.state.settings
    context = {
        "prefix": _prefix(request),
        "version": app.version,
        "max_upload_bytes": settings.max_upload_bytes,
        "max_jobs_in_flight": settings.max_jobs_in_flight,
    }
    return templates.TemplateResponse(request, "index.html", context)


@router.get("/docs", response_class=HTMLResponse)
def docs(request: Request) -> HTMLResponse:
    prefix = _prefix(request)
    static = f"{prefix}/static"
    return get_swagger_ui_html(
        openapi_url=f"{prefix}{request.app.openapi_url}",
        title=f"{request.app.title} API",
        swagger_js_url=f"{static}/vendor/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{static}/vendor/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{static}/favicon.svg",
        swagger_ui_parameters=SWAGGER_PARAMETERS,
    )


def install(app: FastAPI) -> None:
    """Mount the static files and add the page routes (call with ``docs_url=None``)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(router)
