"""Reading failures: what `status` shows of an action's, a wave's or a child workflow's failure, and what a failed
activity left in its failure's details (a build's phases, an external link, artifacts kept for its compensation).

Pure: no workflow calls, table-tested without a server (tests/test_action_rules.py).
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, is_cancelled_exception
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from conveyor.model import (
        COMPENSATION_ARTIFACTS_DETAIL,
        EXTERNAL_DETAIL,
        PHASES_DETAIL,
        ArtifactRef,
        BuildPhase,
        ErrorDetails,
    )


class ActionFailed(Exception):
    """An action ended unsuccessfully; carries what `status` shows."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.details = ErrorDetails(code=code, message=message)


def failure_details(err: BaseException) -> ErrorDetails:
    """The innermost cause of a received failure (an activity's or a child's own error, not the
    "activity task failed" wrapped around it): its type and message."""
    innermost: BaseException = err
    while isinstance(innermost, FailureError) and innermost.cause is not None:
        innermost = innermost.cause
    code = getattr(innermost, "type", None) if isinstance(innermost, ApplicationError) else None
    message = getattr(innermost, "message", None) or str(innermost) or type(innermost).__name__
    return ErrorDetails(code=code or type(innermost).__name__, message=message)


def failure_reason(err: BaseException) -> str:
    return failure_details(err).message


def failure_error(err: Exception) -> ErrorDetails:
    """What status shows of an action's (or a wave's) failure."""
    if isinstance(err, ActionFailed):
        return err.details
    if isinstance(err, ActivityError):
        return activity_error(err)
    return ErrorDetails(code="ActionError", message=str(err))


def activity_error(err: ActivityError) -> ErrorDetails:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return ErrorDetails(code=cause.type or "ActionError", message=cause.message)
    if isinstance(cause, ActivityTimeoutError):
        return ErrorDetails(
            code="ActionTimeout", message=f"activity timed out ({cause.type.name if cause.type else ''})"
        )
    if is_cancelled_exception(err):
        return ErrorDetails(code="ActionCancelled", message="the action was cancelled")
    return ErrorDetails(code="ActionError", message=str(cause or err))


def failure_detail(err: BaseException, key: str) -> object:
    """What a failed activity put under `key` in its ApplicationError's details (a dict), if anything."""
    cause = err.cause if isinstance(err, ActivityError) else None
    if not isinstance(cause, ApplicationError):
        return None
    for detail in cause.details:
        if isinstance(detail, dict) and key in detail:
            return detail[key]
    return None


def failed_phases(err: BaseException) -> list[BuildPhase]:
    """A failed build's phases, which its runner put in the failure's details."""
    found = failure_detail(err, PHASES_DETAIL)
    try:
        return [BuildPhase.model_validate(item) for item in found] if isinstance(found, list) else []
    except ValidationError:
        return []


def failed_external(err: BaseException) -> str | None:
    """A failed action's external link or execution id, which its activity put in the failure's details."""
    found = failure_detail(err, EXTERNAL_DETAIL)
    return found if isinstance(found, str) else None


def compensation_artifacts(err: BaseException) -> list[ArtifactRef]:
    """What a failed action kept for its compensation (a stack as it was), which it put in the failure's details."""
    found = failure_detail(err, COMPENSATION_ARTIFACTS_DETAIL)
    try:
        return [ArtifactRef.model_validate(item) for item in found] if isinstance(found, list) else []
    except ValidationError:
        return []
