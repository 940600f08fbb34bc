"""The pure parts of running an action, without a server: declared retries and their backoff, timeouts, what status
shows of a failure and what a failed activity left in its details (workflows/action.py, workflows/failures.py), and
the stage's ledger of variables, artifacts and compensation steps (workflows/ledger.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    TimeoutError,
    TimeoutType,
)

from conveyor.model import (
    COMPENSATION_ARTIFACTS_DETAIL,
    EXTERNAL_DETAIL,
    PHASES_DETAIL,
    ActionContext,
    ActionOutcome,
    ActionState,
    ArtifactRef,
    ErrorDetails,
    SourceRevision,
)
from conveyor.providers.contract import ActionRequest
from conveyor.providers.registry import PROVIDERS
from conveyor.spec.declaration import Action, RetryPolicyExtension, Stage
from workflows.action import action_timeout, backoff, heartbeat_timeout, transient
from workflows.failures import (
    ActionFailed,
    compensation_artifacts,
    failed_external,
    failed_phases,
    failure_details,
    failure_error,
)
from workflows.ledger import StageLedger


def action(**fields: Any) -> Action:
    declared = {"name": "Go", "provider": "Commands", "commands": ["true"], **fields}
    return Stage.model_validate({"name": "Deploy", "actions": [declared]}).actions[0]


def activity_failed(cause: BaseException) -> ActivityError:
    err = ActivityError(
        "activity task failed",
        scheduled_event_id=1,
        started_event_id=2,
        identity="worker",
        activity_type="run_commands",
        activity_id="1",
        retry_state=RetryState.NON_RETRYABLE_FAILURE,
    )
    err.__cause__ = cause
    return err


def ref(name: str, digest: str = "d1") -> ArtifactRef:
    return ArtifactRef(name=name, digest=digest, location=f"file:///store/{digest}", size=1)


BACKOFF: list[tuple[str, RetryPolicyExtension, int, float]] = [
    ("first retry waits the initial interval", RetryPolicyExtension(initial_interval_seconds=3), 1, 3),
    ("each later one times the coefficient", RetryPolicyExtension(initial_interval_seconds=3), 3, 12),
    (
        "capped at the maximum interval",
        RetryPolicyExtension(initial_interval_seconds=3, maximum_interval_seconds=5),
        3,
        5,
    ),
    ("a coefficient of 1 keeps it flat", RetryPolicyExtension(backoff_coefficient=1), 4, 1),
]


@pytest.mark.parametrize(("case", "policy", "attempt", "seconds"), BACKOFF, ids=[c[0] for c in BACKOFF])
def test_backoff(case: str, policy: RetryPolicyExtension, attempt: int, seconds: float) -> None:
    assert backoff(policy, attempt) == timedelta(seconds=seconds), case


TRANSIENT: list[tuple[str, str, bool]] = [
    ("the provider's own transient error", "CommandFailed", True),
    ("an infrastructure failure", "ActionTimeout", True),
    ("a configuration error fails at once", "ConfigurationError", False),
    ("an unresolvable variable fails at once", "VariableError", False),
    ("a missing artifact fails at once", "ArtifactError", False),
]


@pytest.mark.parametrize(("case", "code", "retried"), TRANSIENT, ids=[c[0] for c in TRANSIENT])
def test_transient(case: str, code: str, retried: bool) -> None:
    assert transient(action(), ErrorDetails(code=code, message="m")) is retried, case


def test_an_unknown_provider_is_never_retried() -> None:
    unknown = action().model_copy(
        update={"action_type_id": action().action_type_id.model_copy(update={"provider": "X"})}
    )
    assert not transient(unknown, ErrorDetails(code="CommandFailed", message="m"))


def test_timeouts_declared_then_codepipelines_then_the_default() -> None:
    default = timedelta(hours=1)
    assert action_timeout(action(), default) == default
    assert action_timeout(action(timeoutInMinutes=7), default) == timedelta(minutes=7)
    assert action_timeout(action(timeoutInMinutes=7, conveyor={"timeoutMinutes": 3}), default) == timedelta(minutes=3)


def test_heartbeat_declared_then_the_providers_then_the_pipelines() -> None:
    own = replace(PROVIDERS["Commands"], heartbeat_timeout=timedelta(seconds=77))
    none = replace(own, heartbeat_timeout=None)
    assert heartbeat_timeout(action(conveyor={"heartbeatTimeoutSeconds": 9}), own, 30) == timedelta(seconds=9)
    assert heartbeat_timeout(action(), own, 30) == timedelta(seconds=77)
    assert heartbeat_timeout(action(), none, 30) == timedelta(seconds=30)


FAILURES: list[tuple[str, Exception, ErrorDetails]] = [
    (
        "the action's own failure",
        ActionFailed("VariableError", "no #{x.y}"),
        ErrorDetails(code="VariableError", message="no #{x.y}"),
    ),
    (
        "an activity's application error: its type and message",
        activity_failed(ApplicationError("exit 2", type="CommandFailed")),
        ErrorDetails(code="CommandFailed", message="exit 2"),
    ),
    (
        "an untyped application error",
        activity_failed(ApplicationError("boom")),
        ErrorDetails(code="ActionError", message="boom"),
    ),
    (
        "a timeout names its kind",
        activity_failed(TimeoutError("t", type=TimeoutType.HEARTBEAT, last_heartbeat_details=[])),
        ErrorDetails(code="ActionTimeout", message="activity timed out (HEARTBEAT)"),
    ),
    (
        "a cancellation",
        activity_failed(CancelledError("cancelled")),
        ErrorDetails(code="ActionCancelled", message="the action was cancelled"),
    ),
    ("anything else", ValueError("odd"), ErrorDetails(code="ActionError", message="odd")),
]


@pytest.mark.parametrize(("case", "err", "shown"), FAILURES, ids=[c[0] for c in FAILURES])
def test_failure_error(case: str, err: Exception, shown: ErrorDetails) -> None:
    assert failure_error(err) == shown, case


def test_failure_details_is_the_innermost_cause() -> None:
    inner = ApplicationError("stack rolled back", type="StackFailed")
    assert failure_details(activity_failed(inner)) == ErrorDetails(code="StackFailed", message="stack rolled back")
    assert failure_details(ValueError()) == ErrorDetails(code="ValueError", message="ValueError")


def test_what_a_failed_activity_left_in_its_details() -> None:
    kept = ref("Before", "d9")
    phase = {"name": "BUILD", "status": "FAILED"}
    details = {
        PHASES_DETAIL: [phase],
        EXTERNAL_DETAIL: "https://x/1",
        COMPENSATION_ARTIFACTS_DETAIL: [kept.model_dump()],
    }
    err = activity_failed(ApplicationError("failed", details, type="BuildFailed"))
    assert [(p.name, p.status) for p in failed_phases(err)] == [("BUILD", "FAILED")]
    assert failed_external(err) == "https://x/1"
    assert compensation_artifacts(err) == [kept]
    # Nothing there, something malformed there, or not an activity's failure: nothing read.
    bare = activity_failed(ApplicationError("failed", {PHASES_DETAIL: "no", COMPENSATION_ARTIFACTS_DETAIL: [1]}))
    assert (failed_phases(bare), failed_external(bare), compensation_artifacts(bare)) == ([], None, [])
    assert (failed_phases(ActionFailed("X", "y")), failed_external(ValueError())) == ([], None)


def test_ledger_resolves_variables_and_artifacts_or_fails_the_action() -> None:
    ledger = StageLedger(values={"Build": {"Tag": "v1"}}, artifacts={"Out": ref("Out")})
    assert ledger.resolve("img:#{Build.Tag}") == "img:v1"
    with pytest.raises(ActionFailed) as unresolved:
        ledger.resolve("#{Build.Nope}")
    assert unresolved.value.details.code == "VariableError"
    assert ledger.artifact(action(), "Out") == ref("Out")
    with pytest.raises(ActionFailed) as missing:
        ledger.artifact(action(), "Gone")
    assert missing.value.details == ErrorDetails(
        code="ArtifactError", message="input artifact 'Gone' of action 'Go' is not available"
    )


def test_ledger_records_a_succeeded_actions_outputs() -> None:
    ledger = StageLedger(values={"Src": {"A": "1"}}, artifacts={})
    revision = SourceRevision(action_name="Go", revision_id="abc")
    outcome = ActionOutcome(output_variables={"K": "v"}, output_artifacts=[ref("Out")], source_revision=revision)
    ledger.record(action(namespace="Go"), outcome)
    ledger.record(action(name="Quiet"), ActionOutcome())  # no namespace: its variables are not kept
    assert ledger.values == {"Src": {"A": "1"}, "Go": {"K": "v"}}
    assert ledger.outputs == {"Go": {"K": "v"}}
    assert (ledger.artifacts, ledger.produced, ledger.revisions) == ({"Out": ref("Out")}, [ref("Out")], [revision])


def compensation_request(declared: Action, ledger: StageLedger) -> tuple[ActionRequest, Any]:
    contract = PROVIDERS["Commands"]
    context = ActionContext(
        pipeline_name="p", execution_id="e", stage_name="Deploy", action_name=declared.name, stage_attempt=1
    )
    request = ActionRequest(
        action=declared,
        context=context,
        configuration={},
        timeout=timedelta(minutes=5),
        revision_override=None,
        resolve=ledger.resolve,
        artifact=lambda name: ledger.artifact(declared, name),
    )
    assert contract.activity is not None
    return request, contract.activity.build_input(request)


def test_compensation_registered_once_per_action_and_wave_and_kept_artifacts_join_it() -> None:
    ledger = StageLedger(values={}, artifacts={})
    commands = PROVIDERS["Commands"]
    undone = action(conveyor={"rollback": ["undo"]})
    request, activity_input = compensation_request(undone, ledger)
    ledger.register_compensation(commands, request, activity_input, "Go", None)
    ledger.register_compensation(commands, request, activity_input, "Go", None)  # a retried attempt: kept as it was
    ledger.register_compensation(commands, request, activity_input, "Go", "eu")  # a wave: its own step
    assert [(c.action_name, c.wave, c.sequence, c.commands) for c in ledger.compensations] == [
        ("Go", None, 1, ["undo"]),
        ("Go", "eu", 2, ["undo"]),
    ]
    plain, plain_input = compensation_request(action(name="Plain"), ledger)
    ledger.register_compensation(commands, plain, plain_input, "Plain", None)  # declares no rollback: no step
    assert len(ledger.compensations) == 2

    state = ActionState(action_name="Go", provider="Commands", category="Build", run_order=1)
    ledger.keep_for_compensation("Go", [ref("Stack", "d1")], state)
    ledger.keep_for_compensation("Go", [ref("Stack", "d1"), ref("Stack2", "d2")], state)  # d1 is not kept twice
    ledger.keep_for_compensation("Nobody", [ref("Else", "d3")], state)  # no step: nothing kept
    assert [r.digest for r in ledger.compensations[0].input_artifacts] == ["d1", "d2"]
    assert [r.digest for r in state.compensation_artifacts] == ["d1", "d2"]
    assert ledger.compensations[1].input_artifacts == []
