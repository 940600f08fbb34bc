"""The pipeline pages: the list (each pipeline's stages with its latest execution's status), one pipeline
(stages, actions, transitions, locks, release change, versions) with its live stage fragment, and a diff of
two registered versions; the actions: a transition's disable/enable, and release change."""

from __future__ import annotations

import asyncio
import difflib
import uuid
from dataclasses import dataclass, field
from typing import Annotated

import yaml
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from conveyor.client import ConveyorClient, ConveyorError, ExecutionSummary
from conveyor.console import live
from conveyor.console.auth import Operating, Refused, Viewing
from conveyor.console.csrf import CheckedForm
from conveyor.console.pages import back, client, confirm, fragment, href, render
from conveyor.model import CoordinatorState, ExecutionState, StageLock, StageState, Trigger, TriggerType
from conveyor.spec.declaration import Pipeline, PipelineName
from conveyor.spec.validation import DeclarationError, parse_pipeline

router = APIRouter()
LIST_AT_ONCE = 8  # pipelines whose latest execution the list reads at once
STAGES_EVENT = "stages"  # the SSE event carrying the pipeline page's stage fragment


# --- reading ---------------------------------------------------------------------------------------


@dataclass
class PipelineRow:
    """One pipeline of the list."""

    name: str
    version: int | None
    mode: str
    stages: list[tuple[str, str | None]]  # stage, its status in the latest execution
    latest: ExecutionSummary | None = None
    problem: str | None = None


@dataclass
class StageView:
    """One stage of a pipeline page: its coordinator lock (transition, holder, waiting) and its latest state."""

    name: str
    lock: StageLock
    state: StageState | None

    @property
    def waiting(self) -> list[str]:
        return [slot.execution_id for slot in [*self.lock.waiting, *self.lock.held]]


@dataclass
class PipelineView:
    name: str
    coordinator: CoordinatorState
    latest: ExecutionState | None
    latest_problem: str | None
    stages: list[StageView] = field(default_factory=list)


async def latest_state(conveyor: ConveyorClient, name: str, *, live: bool) -> tuple[ExecutionState | None, str | None]:
    """The newest execution's state, or why there is none to show."""
    newest = await conveyor.list(name, limit=1)
    if not newest:
        return None, None
    try:
        return await conveyor.state(newest[0].ref, live=live), None
    except ConveyorError as err:
        return None, str(err)


async def pipeline_row(
    conveyor: ConveyorClient, name: str, stage_names: list[str], version: int | None, mode: str
) -> PipelineRow:
    row = PipelineRow(name=name, version=version, mode=mode, stages=[(stage, None) for stage in stage_names])
    try:
        newest = await conveyor.list(name, limit=1)
        if newest:
            row.latest = newest[0]
            state = await conveyor.state(newest[0].ref, live=False)  # the memo: one read, no worker needed
            statuses = {s.stage_name: s.status.value if s.status else None for s in state.stages}
            row.stages = [(stage, statuses.get(stage)) for stage in stage_names]
    except ConveyorError as err:
        row.problem = str(err)
    return row


async def pipeline_view(conveyor: ConveyorClient, name: str) -> PipelineView:
    # The coordinator's state, not pipeline_facts: the page shows transitions, holders and waiters, never a stage's
    # newest entry or last success, which for a PARALLEL pipeline cost a visibility scan of up to 500 memos.
    coordinator, (latest, problem) = await asyncio.gather(
        conveyor.pipeline_state(name), latest_state(conveyor, name, live=True)
    )
    view = PipelineView(name=name, coordinator=coordinator, latest=latest, latest_problem=problem)
    names = list(coordinator.current.stage_names) if coordinator.current else []
    names += [s.stage_name for s in coordinator.stages if s.stage_name not in names]
    names += [s.stage_name for s in (latest.stages if latest else []) if s.stage_name not in names]
    locks = {lock.stage_name: lock for lock in coordinator.stages}
    for stage in names:
        view.stages.append(
            StageView(stage, locks.get(stage) or StageLock(stage_name=stage), latest.stage(stage) if latest else None)
        )
    return view


@router.get("/pipelines")
async def pipelines_page(request: Request, _: Viewing) -> HTMLResponse:
    conveyor = client(request)
    registered = await conveyor.pipelines()
    limit = asyncio.Semaphore(LIST_AT_ONCE)

    async def row(name: str, stage_names: list[str], version: int | None, mode: str) -> PipelineRow:
        async with limit:
            return await pipeline_row(conveyor, name, stage_names, version, mode)

    rows = await asyncio.gather(
        *(
            row(
                name,
                list(memo.current.stage_names) if memo.current else [],
                memo.current.version if memo.current else None,
                memo.mode.value if memo.mode else "",
            )
            for name, memo in registered
        )
    )
    return render(request, "pipelines.html", rows=rows)


def stages_fragment(request: Request, view: PipelineView) -> str:
    """The live part of the pipeline page (also sent by /stream): stages, actions, transitions, locks."""
    return fragment(request, "pipeline_stages.html", view=view)


@router.get("/pipelines/{name}")
async def pipeline_page(request: Request, name: PipelineName, _: Viewing) -> HTMLResponse:
    conveyor = client(request)
    view = await pipeline_view(conveyor, name)
    declared = await declared_variables(conveyor, name)
    return render(
        request,
        "pipeline.html",
        view=view,
        declared=declared,
        release_token=str(uuid.uuid4()),  # one per rendered form: a repeated Confirm starts nothing new
        stream=href("pipelines", name, "stream"),
        stages_event=STAGES_EVENT,
    )


async def declared_variables(conveyor: ConveyorClient, name: str) -> list[tuple[str, str | None]]:
    try:
        pipeline = await current_pipeline(conveyor, name)
    except ConveyorError:
        return []
    return [(v.name, v.default_value) for v in pipeline.variables]


async def current_pipeline(conveyor: ConveyorClient, name: str) -> Pipeline:
    version, declaration = await conveyor.registered(name)
    try:
        return parse_pipeline(declaration, f"{name} (version {version.version})")
    except DeclarationError as err:
        raise ConveyorError(str(err)) from None


@router.get("/pipelines/{name}/stream")
async def pipeline_stream(request: Request, name: PipelineName, _: Viewing) -> StreamingResponse:
    conveyor = client(request)

    async def render_stages() -> str:
        try:
            return stages_fragment(request, await pipeline_view(conveyor, name))
        except ConveyorError as err:
            return fragment(request, "problem.html", message=str(err))

    return live.stream(request, render_stages, event=STAGES_EVENT)


@dataclass
class DiffLine:
    kind: str  # "added", "removed", "hunk", "context"
    text: str


@router.get("/pipelines/{name}/diff")
async def diff_page(
    request: Request,
    name: PipelineName,
    old: Annotated[int, Query(alias="from", ge=1)],
    new: Annotated[int, Query(alias="to", ge=1)],
    _: Viewing,
) -> HTMLResponse:
    conveyor = client(request)
    (_old, before), (_new, after) = await asyncio.gather(conveyor.registered(name, old), conveyor.registered(name, new))
    lines = difflib.unified_diff(
        declaration_text(before), declaration_text(after), f"version {old}", f"version {new}", lineterm=""
    )
    return render(request, "diff.html", name=name, old=old, new=new, lines=[diff_line(line) for line in lines])


def declaration_text(declaration: dict[str, object]) -> list[str]:
    shown = {k: v for k, v in declaration.items() if k != "version"}  # the version differs by definition
    return yaml.safe_dump(shown, sort_keys=False, allow_unicode=True).splitlines()


def diff_line(line: str) -> DiffLine:
    if line.startswith(("+++", "---")):
        return DiffLine("file", line)
    if line.startswith("@@"):
        return DiffLine("hunk", line)
    return DiffLine({"+": "added", "-": "removed"}.get(line[:1], "context"), line)


# --- acting ----------------------------------------------------------------------------------------


@router.post("/pipelines/{name}/transition", response_model=None)
async def transition(
    request: Request, name: PipelineName, viewer: Operating, form: CheckedForm
) -> HTMLResponse | RedirectResponse:
    stage = form.required("stage")
    enable = form.get("enabled") == "true"
    reason = form.get("reason").strip()
    page = href("pipelines", name)
    if not enable and not reason:
        return back(page, f"say why the transition into {stage} is disabled (a reason is required)", error=True)
    word = "enable" if enable else "disable"
    if not form.confirmed:
        why = f" (reason: {reason})" if reason else ""
        return confirm(
            request,
            form,
            what=f"{word} the transition into stage {stage}{why}",
            target=f"pipeline {name}",
            back_to=page,
        )
    try:
        result = await client(request).set_transition(name, stage, enabled=enable, reason=reason, by=viewer.user)
    except ConveyorError as err:
        return back(page, str(err), error=True)
    state = "enabled" if result.enabled else "disabled"
    return back(page, f"The transition into {stage} is {state} (by {result.changed_by or viewer.user}).")


def parse_variables(text: str) -> dict[str, str]:
    """`name=value` lines (blank lines skipped) as the pipeline-level variables of a start."""
    variables: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise Refused(400, "Bad variables", f"variables line {number}: write it as name=value")
        variables[name.strip()] = value
    return variables


@router.post("/pipelines/{name}/release", response_model=None)
async def release_change(
    request: Request, name: PipelineName, viewer: Operating, form: CheckedForm
) -> HTMLResponse | RedirectResponse:
    page = href("pipelines", name)
    conveyor = client(request)
    try:
        variables = parse_variables(form.get("variables"))
        version, declaration = await conveyor.registered(name)
        pipeline = parse_pipeline(declaration, f"{name} (version {version.version})")
    except Refused as err:
        return back(page, err.message, error=True)
    except (ConveyorError, DeclarationError) as err:
        return back(page, str(err), error=True)
    declared = {v.name for v in pipeline.variables}
    undeclared = sorted(set(variables) - declared)
    if undeclared:
        known = ", ".join(sorted(declared)) or "none"
        return back(
            page, f"the pipeline declares no variable {', '.join(undeclared)} (it declares: {known})", error=True
        )
    if not form.confirmed:
        given = ", ".join(f"{k}={v}" for k, v in variables.items())
        what = f"start an execution of version {version.version}" + (f" with {given}" if given else "")
        return confirm(request, form, what=what, target=f"pipeline {name}", back_to=page)
    try:
        ref, started = await conveyor.start(
            declaration,
            variables=variables,
            token=form.get("token") or None,
            started_by=viewer.user,
            trigger=Trigger(
                trigger_type=TriggerType.START_PIPELINE_EXECUTION, trigger_detail=f"console: {viewer.user}"
            ),
            source_name=f"{name} (version {version.version})",
        )
    except ConveyorError as err:
        return back(page, str(err), error=True)
    what = "Started" if started else "Already started (this form was submitted before)"
    return back(page, f"{what}: execution {ref}.")
