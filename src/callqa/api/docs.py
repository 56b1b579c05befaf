"""/docs (Swagger UI) served from the swagger-ui-bundle package's files, so it works without internet."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def swagger_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    return Path(swagger_ui_path)


def install_docs(app: FastAPI) -> None:
    """Serve /docs and its assets under /docs/assets/ (create the app with ``docs_url=None``)."""
    folder = swagger_dir()

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js", swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
        )  # fmt: skip

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/docs/assets/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        path = folder / name
        if "/" in name or name.startswith(".") or path.suffix not in ASSETS or not path.is_file():
            raise HTTPException(404, "no such asset")
        return FileResponse(path, media_type=ASSETS[path.suffix], headers={"Cache-Control": "max-age=86400"})
