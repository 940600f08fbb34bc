"""How console pages are made; the conventions every page follows.

- A page: a route in a module's `router` (an APIRouter, included by `app.console_app`) that takes
  `viewer: Viewing` (auth.py) and returns `render(request, "NAME.html", **context)`; the template extends
  base.html and fills `{% block content %}`. Autoescape is on: never `|safe` on what a pipeline or a person wrote.
- URLs: `href("pipelines", name, key=value)` in Python and templates (each part quoted, under /console).
- An action: a POST route taking `viewer: Operating` (or `Identified`) and then `form: CheckedForm` (the role
  first, so a viewer gets the role's 403, then the CSRF check). Without `confirmed=yes` it answers
  `confirm(...)`, the page saying what will happen, whose Confirm re-posts the same fields; with it, it acts
  and answers `back(href(...), message)`, a redirect whose flash the page shows (a ConveyorError's text with
  `error=True`); a field the confirm step must not lose (an idempotency token) is a hidden field of the form.
  Forms in templates: `{% include "csrf_field.html" %}` inside the <form>.
- A live fragment: a template rendered on its own (`fragment(request, NAME, ...)`), included by the page inside
  `<div hx-ext="sse" sse-connect="{{ href(...'stream') }}"><div sse-swap="EVENT">`, and a `/stream` route
  answering `live.stream(request, render, event="EVENT")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, StrictUndefined

from conveyor.client import ConveyorClient
from conveyor.console import csrf
from conveyor.console.auth import Viewer, options_of
from conveyor.text import duration, utc_time

PREFIX = "/console"
STATIC = Path(__file__).parent / "static"
# The vendored files' names (version in the name: a new version is a new URL, so caches never serve a stale one).
STATIC_FILES = {
    "htmx": "htmx-2.0.11.min.js",
    "htmx_sse": "htmx-ext-sse-2.2.4.js",
    "css": "console.css",
}


def href(*parts: object, **query: object) -> str:
    path = "/".join(quote(str(part), safe="") for part in parts)
    shown = {k: str(v) for k, v in query.items() if v is not None}
    return f"{PREFIX}/{path}" + (f"?{urlencode(shown)}" if shown else "")


def external_link(url: str | None) -> str | None:
    """Only http(s) URLs become links: a `javascript:` or `data:` URL from an action's output stays text."""
    return url if url and url.lower().startswith(("https://", "http://")) else None


templates = Environment(
    loader=PackageLoader("conveyor.console", "templates"), autoescape=True, undefined=StrictUndefined
)
templates.globals.update(
    static_files=STATIC_FILES,
    href=href,
    external_link=external_link,
    duration=duration,
    utc_time=utc_time,
    static=lambda key: f"{PREFIX}/static/{STATIC_FILES[key]}",
    csrf_field=csrf.FIELD,
)


def client(request: Request) -> ConveyorClient:
    """The service's Temporal client (connected at start-up)."""
    found: ConveyorClient = request.app.state.console_client()
    return found


def fragment(request: Request, template: str, **context: Any) -> str:
    """A template with what every page and fragment has: the viewer and a CSRF token for its forms."""
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    token = csrf.issue(options_of(request).csrf_secret, viewer.user) if viewer else ""
    return templates.get_template(template).render(viewer=viewer, csrf_token=token, **context)


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """A whole page: a fragment of base.html's kind, with the flash of the action that led here."""
    flash = request.query_params.get("flash")
    page = fragment(request, template, flash=flash, flash_error=request.query_params.get("error") == "1", **context)
    return HTMLResponse(page, status_code=status)


def confirm(request: Request, form: csrf.Form, *, what: str, target: str, back_to: str) -> HTMLResponse:
    """The confirm step: "This will WHAT on TARGET.", re-posting the same fields with `confirmed=yes`."""
    return render(
        request,
        "confirm.html",
        what=what,
        target=target,
        action=request.url.path,
        fields=form.fields,
        confirmed_field=csrf.CONFIRMED,
        back_to=back_to,
    )


def back(to: str, message: str, *, error: bool = False) -> RedirectResponse:
    """After acting: back to the page, with the outcome as its flash (shown escaped)."""
    joiner = "&" if "?" in to else "?"
    query = urlencode({"flash": message, **({"error": "1"} if error else {})})
    return RedirectResponse(f"{to}{joiner}{query}", status_code=303)
