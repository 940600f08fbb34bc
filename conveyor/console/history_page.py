"""The execution history page of a pipeline: newest first, filtered by a GET form (status, trigger, a stage
succeeded in, a source revision), paged by history.py's opaque token; the first page's rows follow live over
server-sent events (a later page stays as it was read: new executions would shift it)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import ValidationError

from conveyor.client import ConveyorError
from conveyor.console import live
from conveyor.console.auth import Viewing
from conveyor.console.history import HistoryPage, HistoryQuery, HistoryTokenError, execution_history
from conveyor.console.pages import client, fragment, href, render
from conveyor.model import ExecutionStatus, TriggerType
from conveyor.spec.declaration import PipelineName

router = APIRouter()
ROWS_EVENT = "rows"  # the SSE event carrying the first page's rows
FILTERS = ("status", "trigger", "succeeded_in", "source_revision")
PAGE_SIZE = "page_size"  # rows a page (history.py's default when absent); kept in the links, not in the form
PAGE = "page"  # the query parameter of the next-page token


@dataclass
class HistoryView:
    """What the page and its live fragment show."""

    name: str
    filters: dict[str, str]  # as typed (empty ones left out): the form's values and the links' query
    first_page: bool
    page: HistoryPage | None = None
    problem: str | None = None  # a bad filter or token, said instead of rows

    @property
    def filtered(self) -> bool:
        return any(key in self.filters for key in FILTERS)

    def link(self, token: str | None = None) -> str:
        return href("pipelines", self.name, "executions", **self.filters, **({PAGE: token} if token else {}))


def read_query(request: Request, name: str) -> tuple[HistoryView, HistoryQuery | None]:
    """The filters and page token of the request; a value the history cannot take is the view's problem."""
    filters = {key: value for key in (*FILTERS, PAGE_SIZE) if (value := request.query_params.get(key, "").strip())}
    token = request.query_params.get(PAGE) or None
    view = HistoryView(name=name, filters=filters, first_page=token is None)
    try:
        return view, HistoryQuery.model_validate({**filters, "page_token": token})
    except ValidationError as err:
        view.problem = "; ".join(f"{problem_field(e['loc'])}: {e['msg']}" for e in err.errors())
        return view, None


def problem_field(loc: tuple[int | str, ...]) -> str:
    return str(loc[0]).replace("_", " ") if loc else "filters"


async def read_page(request: Request, view: HistoryView, query: HistoryQuery | None) -> HistoryView:
    if query is None:
        return view
    try:
        view.page = await execution_history(client(request), view.name, query)
    except HistoryTokenError as err:
        view.problem = str(err)
    return view


@router.get("/pipelines/{name}/executions")
async def history_page(request: Request, name: PipelineName, _: Viewing) -> HTMLResponse:
    view, query = read_query(request, name)
    view = await read_page(request, view, query)
    return render(
        request,
        "history.html",
        status=400 if view.problem else 200,
        view=view,
        statuses=[status.value for status in ExecutionStatus],
        triggers=[trigger.value for trigger in TriggerType],
        stream=href("pipelines", name, "history-stream", **view.filters),
        rows_event=ROWS_EVENT,
    )


# Not under executions/: that is where the execution page (`executions/{execution_id}`) matches.
@router.get("/pipelines/{name}/history-stream")
async def history_stream(request: Request, name: PipelineName, _: Viewing) -> StreamingResponse:
    """The first page's rows, re-read while the page is open (a token is ignored: later pages do not follow)."""
    view, query = read_query(request, name)
    if query is not None:
        query = query.model_copy(update={"page_token": None})
    view.first_page = True

    async def render_rows() -> str:
        try:
            return fragment(request, "history_rows.html", view=await read_page(request, view, query))
        except ConveyorError as err:
            return fragment(request, "problem.html", message=str(err))

    return live.stream(request, render_rows, event=ROWS_EVENT)
