"""The console: an app mounted by `create_app` under /console, with its own authentication, error pages and
security headers (see pages.py for how a page, an action and a live fragment are added)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException
from temporalio.service import RPCError

from conveyor.client import ConveyorClient, ConveyorError
from conveyor.console import execution, history_page, pipelines
from conveyor.console.acting import router as acting_router
from conveyor.console.auth import ConsoleOptions, Refused, Viewing, authenticated
from conveyor.console.pages import STATIC, href, render

SECURITY_HEADERS = {
    # No inline script or style anywhere: what an action or a person wrote cannot run even if escaping failed.
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def console_app(client: Callable[[], ConveyorClient], options: ConsoleOptions) -> FastAPI:
    """The console's ASGI app; `client` gives the service's connected client."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    # Every page and form authenticates; only the shipped static files (the style sheet and the vendored htmx: nothing
    # of anyone's) are public, so the "not signed in" page is styled like the rest.
    signed = [Depends(authenticated)]
    app.state.console_options = options
    app.state.console_client = client

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")  # pages show live state and carry tokens
        return response

    @app.exception_handler(Refused)
    async def refused(request: Request, err: Refused) -> HTMLResponse:
        response = render(request, "error.html", status=err.status, title=err.title, message=err.message)
        if err.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="conveyor console"'
        return response

    @app.exception_handler(ConveyorError)
    async def conveyor_error(request: Request, err: ConveyorError) -> HTMLResponse:
        # A page that cannot be read is not found; an action that cannot be done conflicts with the state.
        status = 404 if request.method == "GET" else 409
        return render(request, "error.html", status=status, title="Cannot do that", message=str(err))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> HTMLResponse:
        return render(request, "error.html", status=err.status_code, title="Not found", message=str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> HTMLResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        return render(request, "error.html", status=400, title="Bad request", message=problems)

    @app.exception_handler(RPCError)
    async def temporal_error(request: Request, err: RPCError) -> HTMLResponse:
        return render(request, "error.html", status=503, title="Temporal did not answer", message=err.message)

    @app.get("/", dependencies=signed)
    async def home(_: Viewing) -> Response:
        return Response(status_code=303, headers={"Location": href("pipelines")})

    @app.get("/static/{name}")
    async def static(name: str) -> FileResponse:
        path = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()}:  # only the files shipped, never a path outside
            raise Refused(404, "Not found", f"no static file '{name}'")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    app.include_router(pipelines.router, dependencies=signed)
    app.include_router(acting_router, dependencies=signed)
    app.include_router(execution.router, dependencies=signed)
    app.include_router(history_page.router, dependencies=signed)
    return app
