"""Acting from the console: the approval page (Approve / Reject with a summary) and the forms that stop an
execution, retry a failed stage, roll back a stage and override a condition.

Each goes form -> the confirm step (saying exactly what will happen) -> the ConveyorClient call -> back to the
page with the outcome. Deciding an approval needs a signed-in person: the console only authenticates, the
stage workflow's approval policy (approvers, quorum, separation of duties) authorizes, as for Slack and the
CLI. Everything else needs the operator role. The page to go back to is the execution's page unless the form
names another console page (`back`): the pipeline page's links pass themselves.

URLs (the execution page links to them; every GET shows a form that POSTs to the same URL):
- /pipelines/{name}/executions/{id}/approvals/{stage}/{action}   approve or reject (field `decision`)
- /pipelines/{name}/executions/{id}/stop                         `mode` wait|abandon, `reason`
- /pipelines/{name}/executions/{id}/stages/{stage}/retry         `mode` failed-actions|all-actions
- /pipelines/{name}/executions/{id}/stages/{stage}/override      `condition` before-entry|on-success, `reason`
- /pipelines/{name}/stages/{stage}/rollback                      `to`: an execution id, empty: the last
                                                                   successful one before the current
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from conveyor.client import (
    ConveyorClient,
    ConveyorError,
    ExecutionRef,
    ExecutionSummary,
    UpdateNotApplied,
    approval_closed_reason,
)
from conveyor.console import live
from conveyor.console.auth import Authenticated, Identified, Operating, Via, Viewer, options_of
from conveyor.console.csrf import CheckedForm, Form
from conveyor.console.pages import PREFIX, back, client, confirm, fragment, href, render
from conveyor.identities import IdentityDirectory, normalize, who_may_decide
from conveyor.interface import ApprovalStatus, ConditionKind, RetryMode
from conveyor.model import ActionState, ApprovalRequest, ApprovalResult, ExecutionState, TriggerType
from conveyor.providers.manual import MANUAL
from conveyor.spec.declaration import PipelineName
from conveyor.spec.validation import DeclarationError, parse_pipeline

router = APIRouter()
EXECUTION = "/pipelines/{name}/executions/{execution_id}"
APPROVAL_EVENT = "approval"  # the SSE event carrying the approval page's status fragment
SUMMARY_LIMIT = 512  # characters: CodePipeline's limit on an approval's summary
ROLLBACK_CANDIDATES = 20  # executions that succeeded in the stage offered as rollback targets
RETRY_MODES = {"failed-actions": RetryMode.FAILED_ACTIONS, "all-actions": RetryMode.ALL_ACTIONS}
CONDITIONS = {"before-entry": ConditionKind.BEFORE_ENTRY, "on-success": ConditionKind.ON_SUCCESS}
ROLLBACK_TRIGGERS = {TriggerType.MANUAL_ROLLBACK.value, TriggerType.AUTOMATED_ROLLBACK.value}


def execution_page(name: str, execution_id: str) -> str:
    return href("pipelines", name, "executions", execution_id)


def approval_page(name: str, execution_id: str, stage: str, action: str) -> str:
    return href("pipelines", name, "executions", execution_id, "approvals", stage, action)


def back_to(asked: str | None, default: str) -> str:
    """The console page a form goes back to: `asked` when it is one of this console's paths (never another
    site: `//host`, a scheme or a backslash would make the redirect leave the console; `..` its pages), else
    `default`."""
    if asked and asked.startswith(f"{PREFIX}/") and not any(bad in asked for bad in ("//", "\\", "..")):
        return asked
    return default


def decider(viewer: Viewer, directory: IdentityDirectory) -> tuple[str, list[str]]:
    """Who decides and the other names they are known by, as Slack does it: the directory's identity for the
    signed-in name (or the proxy's email), else that name; with every name the directory ties to them."""
    names = directory.closure(viewer.user) | {n for p in viewer.principals for n in directory.closure(p)}
    if viewer.user in directory.identities:
        identity = viewer.user
    else:
        listed = [directory.identity_for(p) for p in [normalize(viewer.user), *viewer.principals]]
        identity = next((found for found in listed if found), viewer.user)
        names |= directory.names_of(identity)
    return identity, sorted(names - {identity})


# --- the approval page ------------------------------------------------------------------------------


@dataclass
class ApprovalView:
    """What the approval page shows: what is asked, who may decide, the quorum so far, the deadline."""

    ref: ExecutionRef
    stage: str
    state: ExecutionState
    action: ActionState
    request: ApprovalRequest
    approved: list[ApprovalResult]
    may_decide: str
    closed: str | None  # why no decision is taken any more; None while it waits
    deadline: datetime | None
    custom_data: str | None

    @property
    def page(self) -> str:
        return approval_page(self.ref.pipeline_name, self.ref.execution_id, self.stage, self.action.action_name)


async def approval_view(
    conveyor: ConveyorClient, ref: ExecutionRef, stage: str, action: str, *, deadline: bool = True
) -> ApprovalView:
    state, found = await conveyor.action_state(ref, stage, action)
    if found.category != "Approval":
        raise ConveyorError(f"{stage}/{action} is a {found.provider} action, not an approval")
    request = found.approval_request or ApprovalRequest()
    approved = [d for d in found.approvals if d.status in (ApprovalStatus.APPROVED, ApprovalStatus.PENDING)]
    waiting = found.token is not None
    return ApprovalView(
        ref=ref,
        stage=stage,
        state=state,
        action=found,
        request=request,
        approved=approved,
        may_decide=who_may_decide(request, approved),
        closed=None if waiting else approval_closed_reason(ref, state, stage, action),
        deadline=await approval_deadline(conveyor, state, stage, found) if waiting and deadline else None,
        custom_data=request.custom_data or found.resolved_configuration.get("CustomData"),
    )


async def approval_deadline(
    conveyor: ConveyorClient, state: ExecutionState, stage: str, action: ActionState
) -> datetime | None:
    """When a waiting approval times out: its start plus its timeout (the action's `conveyor.timeoutMinutes`,
    else `timeoutInMinutes`, else the Manual provider's default; the rule of workflows/action.py
    `action_timeout`), read from the execution's registered version; None when that version is not known."""
    if action.started_at is None:
        return None
    try:
        version, declaration = await conveyor.registered(state.pipeline_name, state.pipeline_version)
        pipeline = parse_pipeline(declaration, f"{state.pipeline_name} (version {version.version})")
    except (ConveyorError, DeclarationError):
        return None  # started from a file, never applied: its declaration is not stored
    declared = next((s for s in pipeline.stages if s.name == stage), None)
    found = next((a for a in declared.actions if a.name == action.action_name), None) if declared else None
    if found is None:
        return None
    minutes = found.conveyor.timeout_minutes or found.timeout_in_minutes
    return action.started_at + (timedelta(minutes=minutes) if minutes else MANUAL.default_timeout)


@router.get(EXECUTION + "/approvals/{stage}/{action}")
async def approval(
    request: Request, name: PipelineName, execution_id: str, stage: str, action: str, viewer: Authenticated
) -> HTMLResponse:
    """Anyone signed in may open it (an approver need not be a console viewer); only a known person decides."""
    view = await approval_view(client(request), ExecutionRef(name, execution_id), stage, action)
    return render(
        request,
        "approval.html",
        view=view,
        can_decide=viewer.via != Via.ANONYMOUS and view.closed is None,
        form_id=str(uuid.uuid4()),  # one per rendered form: a repeated Confirm is the same update
        summary_limit=SUMMARY_LIMIT,
        back=back_to(request.query_params.get("back"), view.page),
        approval_event=APPROVAL_EVENT,
    )


@router.get(EXECUTION + "/approvals/{stage}/{action}/stream")
async def approval_stream(
    request: Request, name: PipelineName, execution_id: str, stage: str, action: str, _: Authenticated
) -> StreamingResponse:
    """The approval's status and decisions, live: a decision from Slack or the CLI shows without a reload."""
    conveyor, ref = client(request), ExecutionRef(name, execution_id)
    first = await approval_view(conveyor, ref, stage, action)  # the deadline is read once: it does not move

    async def render_status() -> str:
        try:
            view = await approval_view(conveyor, ref, stage, action, deadline=False)
        except ConveyorError as err:
            return fragment(request, "problem.html", message=str(err))
        view.deadline = first.deadline if view.closed is None else None
        return fragment(request, "approval_status.html", view=view)

    return live.stream(request, render_status, event=APPROVAL_EVENT)


@router.post(EXECUTION + "/approvals/{stage}/{action}", response_model=None)
async def decide(
    request: Request,
    name: PipelineName,
    execution_id: str,
    stage: str,
    action: str,
    viewer: Identified,
    form: CheckedForm,
) -> HTMLResponse | RedirectResponse:
    page = back_to(form.get("back"), approval_page(name, execution_id, stage, action))
    choice = form.required("decision")
    if choice not in ("approve", "reject"):
        return back(page, f"decision '{choice}': use approve or reject", error=True)
    verb = "approval" if choice == "approve" else "rejection"
    summary = form.get("summary").strip()
    if len(summary) > SUMMARY_LIMIT:
        return back(page, f"the summary is {len(summary)} characters; at most {SUMMARY_LIMIT}", error=True)
    by, principals = decider(viewer, options_of(request).directory)
    if not form.confirmed:
        said = f', with the summary "{summary}"' if summary else " (no summary)"
        what = f"{choice} {stage}/{action} of execution {execution_id} as {by}{said}"
        return confirm(request, form, what=what, target=f"pipeline {name}", back_to=page)
    form_id = form.get("form")
    try:
        result = await client(request).decide(
            ExecutionRef(name, execution_id),
            stage,
            action,
            approve=choice == "approve",
            summary=summary,
            token=form.get("token") or None,  # the approval shown on the page, not a later one
            by=by,
            source="console",
            principals=principals,
            update_id=f"console-{choice}-{form_id}" if form_id else None,
        )
    except UpdateNotApplied as pending:  # sent: it may still count, so "did not count" would be false
        return back(page, f"Your {verb} is not counted yet: {pending}", error=True)
    except ConveyorError as refused:
        return back(page, f"Your {verb} did not count: {refused}", error=True)
    return back(page, decided(result, stage, action, execution_id))


def decided(result: ApprovalResult, stage: str, action: str, execution_id: str) -> str:
    if result.status == ApprovalStatus.PENDING:
        return (
            f"Your approval counted: {result.approvals} of {result.quorum} approvals of {stage}/{action}; "
            "another approver is needed."
        )
    if result.status == ApprovalStatus.APPROVED:
        return f"Approved by {result.by}: {stage}/{action} succeeded and execution {execution_id} goes on."
    return f"Rejected by {result.by}: {stage}/{action} failed, and with it execution {execution_id}."


# --- stop, retry, override ---------------------------------------------------------------------------


async def execution_state(conveyor: ConveyorClient, ref: ExecutionRef) -> ExecutionState:
    return await conveyor.state(ref)


def action_form(
    request: Request,
    template: str,
    name: str,
    execution_id: str | None,
    state: ExecutionState | None,
    **context: Any,
) -> HTMLResponse:
    default = execution_page(name, execution_id) if execution_id else href("pipelines", name)
    return render(
        request,
        template,
        name=name,
        execution_id=execution_id,
        state=state,
        action=request.url.path,
        back=back_to(request.query_params.get("back"), default),
        **context,
    )


@router.get(EXECUTION + "/stop")
async def stop_form(request: Request, name: PipelineName, execution_id: str, _: Operating) -> HTMLResponse:
    state = await execution_state(client(request), ExecutionRef(name, execution_id))
    return action_form(request, "stop.html", name, execution_id, state)


@router.post(EXECUTION + "/stop", response_model=None)
async def stop(
    request: Request, name: PipelineName, execution_id: str, viewer: Operating, form: CheckedForm
) -> HTMLResponse | RedirectResponse:
    page = back_to(form.get("back"), execution_page(name, execution_id))
    mode = form.get("mode", "wait")
    if mode not in ("wait", "abandon"):
        return back(page, f"stop mode '{mode}': use wait or abandon", error=True)
    reason = form.get("reason").strip()
    if not form.confirmed:
        how = (
            "abandon its running actions at once (their processes are killed; nothing new starts)"
            if mode == "abandon"
            else "let its running actions finish and start nothing new"
        )
        why = f" (reason: {reason})" if reason else ""
        return confirm(
            request, form, what=f"stop execution {execution_id}: {how}{why}", target=f"pipeline {name}", back_to=page
        )
    return await acted(
        page,
        lambda conveyor: conveyor.stop(
            ExecutionRef(name, execution_id), reason=reason, abandon=mode == "abandon", by=viewer.user
        ),
        lambda state: f"Execution {execution_id} is {state.status.value} (stopped by {viewer.user}).",
        client(request),
    )


@router.get(EXECUTION + "/stages/{stage}/retry")
async def retry_form(request: Request, name: PipelineName, execution_id: str, stage: str, _: Operating) -> HTMLResponse:
    state = await execution_state(client(request), ExecutionRef(name, execution_id))
    return action_form(request, "retry.html", name, execution_id, state, stage=stage)


@router.post(EXECUTION + "/stages/{stage}/retry", response_model=None)
async def retry(
    request: Request, name: PipelineName, execution_id: str, stage: str, viewer: Operating, form: CheckedForm
) -> HTMLResponse | RedirectResponse:
    page = back_to(form.get("back"), execution_page(name, execution_id))
    mode = form.get("mode", "failed-actions")
    if mode not in RETRY_MODES:
        return back(page, f"retry mode '{mode}': use {' or '.join(RETRY_MODES)}", error=True)
    if not form.confirmed:
        which = "its failed actions" if mode == "failed-actions" else "all its actions"
        what = f"retry stage {stage} of execution {execution_id}, running {which} again; the execution resumes"
        return confirm(request, form, what=what, target=f"pipeline {name}", back_to=page)
    return await acted(
        page,
        lambda conveyor: conveyor.retry(
            ExecutionRef(name, execution_id), stage, mode=RETRY_MODES[mode], by=viewer.user
        ),
        lambda state: f"Stage {stage} is retried (by {viewer.user}): execution {execution_id} is {state.status.value}.",
        client(request),
    )


@router.get(EXECUTION + "/stages/{stage}/override")
async def override_form(
    request: Request, name: PipelineName, execution_id: str, stage: str, _: Operating
) -> HTMLResponse:
    state = await execution_state(client(request), ExecutionRef(name, execution_id))
    return action_form(request, "override.html", name, execution_id, state, stage=stage, stage_state=state.stage(stage))


@router.post(EXECUTION + "/stages/{stage}/override", response_model=None)
async def override(
    request: Request, name: PipelineName, execution_id: str, stage: str, viewer: Operating, form: CheckedForm
) -> HTMLResponse | RedirectResponse:
    page = back_to(form.get("back"), execution_page(name, execution_id))
    condition = form.get("condition", "before-entry")
    if condition not in CONDITIONS:
        return back(page, f"condition '{condition}': use {' or '.join(CONDITIONS)}", error=True)
    reason = form.get("reason").strip()
    if not form.confirmed:
        why = f" (reason: {reason})" if reason else ""
        what = f"override the {condition} condition of stage {stage} in execution {execution_id}, letting it past{why}"
        return confirm(request, form, what=what, target=f"pipeline {name}", back_to=page)
    kind = CONDITIONS[condition]
    return await acted(
        page,
        lambda conveyor: conveyor.override_condition(
            ExecutionRef(name, execution_id), stage, kind, reason=reason, by=viewer.user
        ),
        lambda state: (
            f"The {condition} condition of {stage} is overridden (by {viewer.user}): "
            f"execution {execution_id} is {state.status.value}."
        ),
        client(request),
    )


async def acted(
    page: str,
    act: Callable[[ConveyorClient], Awaitable[ExecutionState]],
    outcome: Callable[[ExecutionState], str],
    conveyor: ConveyorClient,
) -> RedirectResponse:
    """Run the client call; back to the page with its outcome, or with the refusal in words."""
    try:
        state = await act(conveyor)
    except ConveyorError as err:
        return back(page, str(err), error=True)
    return back(page, outcome(state))


# --- rollback ----------------------------------------------------------------------------------------


@dataclass
class RollbackChoice:
    """Executions that succeeded in the stage (newest first), and the default: the last successful one
    before the execution currently in the stage."""

    candidates: list[ExecutionSummary]
    current: str | None
    default: str | None


async def rollback_choice(conveyor: ConveyorClient, name: str, stage: str) -> RollbackChoice:
    succeeded = await conveyor.list(name, ROLLBACK_CANDIDATES, succeeded_in=stage)
    candidates = [e for e in succeeded if e.trigger not in ROLLBACK_TRIGGERS]  # a rollback is never a target
    facts = await conveyor.pipeline_facts(name)
    lock = next((s for s in facts.stages if s.stage_name == stage), None)
    entered = lock.newest_entered if lock else None
    current = entered.execution_id if entered else (succeeded[0].execution_id if succeeded else None)
    default = next((e.execution_id for e in candidates if e.execution_id != current), None)
    return RollbackChoice(candidates=candidates, current=current, default=default)


@router.get("/pipelines/{name}/stages/{stage}/rollback")
async def rollback_form(request: Request, name: PipelineName, stage: str, _: Operating) -> HTMLResponse:
    choice = await rollback_choice(client(request), name, stage)
    return action_form(request, "rollback.html", name, None, None, stage=stage, choice=choice)


@router.post("/pipelines/{name}/stages/{stage}/rollback", response_model=None)
async def rollback(
    request: Request, name: PipelineName, stage: str, viewer: Operating, form: CheckedForm
) -> HTMLResponse | RedirectResponse:
    page = back_to(form.get("back"), href("pipelines", name))
    conveyor = client(request)
    target = form.get("to").strip()
    which = ""
    if not target:
        try:
            target = (await rollback_choice(conveyor, name, stage)).default or ""
        except ConveyorError as err:
            return back(page, str(err), error=True)
        if not target:
            return back(page, f"no earlier execution succeeded in stage {stage}: nothing to roll back to", error=True)
        which = ", the last successful one before the current"
        form = Form({**form.values, "to": target})  # the confirm step names the execution it chose
    if not form.confirmed:
        what = (
            f"start a rollback execution that re-runs stage {stage} with the artifacts, variables and source "
            f"revisions of execution {target}{which}"
        )
        return confirm(request, form, what=what, target=f"pipeline {name}", back_to=page)
    try:
        started = await conveyor.rollback(name, stage, target, by=viewer.user)
    except ConveyorError as err:
        return back(page, str(err), error=True)
    return back(page, f"Started rollback execution {started.execution_id}: stage {stage} as execution {target} ran it.")
