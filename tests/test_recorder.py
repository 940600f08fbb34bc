"""The execution's recorder without a server: what it writes (memo, search attributes, in order) and the
transitions it keeps (workflows/recorder.py). A list stands in for the workflow's memo and search attributes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.common import SearchAttributeUpdate, TypedSearchAttributes

from conveyor.memo import EXECUTION_KEY, STAGE_KEY_PREFIX
from conveyor.model import (
    ActionState,
    ActionStatus,
    ErrorDetails,
    ExecutionState,
    ExecutionStatus,
    StageResult,
    StageRetryRequest,
    StageState,
    StageStatus,
    TransitionScope,
)
from conveyor.search_attributes import PIPELINE_STAGES_SUCCEEDED, PIPELINE_STATUS
from conveyor.spec.declaration import Pipeline
from workflows.recorder import Recorder

START = datetime(2026, 1, 1, tzinfo=UTC)


class ListWriter:
    """Every write, in order: ("memo", keys) or ("attributes", {name: value})."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, Any]] = []
        self.clock = START

    def now(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    def search_attributes(self) -> TypedSearchAttributes:
        return TypedSearchAttributes.empty

    def upsert_memo(self, fields: dict[str, Any]) -> None:
        self.writes.append(("memo", sorted(fields)))

    def upsert_search_attributes(self, updates: list[SearchAttributeUpdate[Any]]) -> None:
        self.writes.append(("attributes", {u.key.name: u.value for u in updates}))

    def log(self, event: str, **fields: str) -> None:
        pass


PIPELINE = Pipeline.model_validate(
    {
        "name": "p",
        "stages": [
            {"name": name, "actions": [{"name": "Go", "provider": "Commands", "commands": ["true"]}]}
            for name in ("Build", "Deploy")
        ],
    }
)


def started() -> tuple[Recorder, ListWriter]:
    writer = ListWriter()
    recorder = Recorder(writer)
    recorder.begin(
        ExecutionState(
            pipeline_name="p",
            execution_id="e1",
            stages=[
                StageState(
                    stage_name=name, actions=[ActionState(action_name="Go", provider="Commands", category="Build")]
                )
                for name in ("Build", "Deploy")
            ],
        )
    )
    recorder.started(PIPELINE)
    return recorder, writer


def succeeded(stage: StageState) -> StageResult:
    at = stage.started_at or START
    action = stage.actions[0].model_copy(
        update={"status": ActionStatus.SUCCEEDED, "started_at": at, "finished_at": at + timedelta(milliseconds=5)}
    )
    return StageResult(state=stage.model_copy(update={"status": StageStatus.SUCCEEDED, "actions": [action]}))


def test_the_whole_memo_goes_with_the_first_stage_entry_and_a_success_with_the_next() -> None:
    recorder, writer = started()
    assert writer.writes == [
        (
            "attributes",
            {
                "PipelineName": "p",
                "PipelineVersion": 1,
                "PipelineStatus": "InProgress",
                "PipelineTrigger": "StartPipelineExecution",
            },
        ),
    ]  # the memo waits for the first stage's entry
    build = recorder.stage_started(0, None, None)
    recorder.stage_finished(0, succeeded(build))
    recorder.stage_succeeded("Build")
    deploy = recorder.stage_started(1, None, None)
    recorder.stage_finished(1, succeeded(deploy))
    recorder.finished(ExecutionStatus.SUCCEEDED, None)
    everything = sorted([EXECUTION_KEY, STAGE_KEY_PREFIX + "Build", STAGE_KEY_PREFIX + "Deploy"])
    assert writer.writes[1:] == [
        ("memo", everything),  # the start's memo, with Build's entry
        ("attributes", {"PipelineStagesSucceeded": ["Build"]}),
        ("memo", [STAGE_KEY_PREFIX + "Build", STAGE_KEY_PREFIX + "Deploy"]),  # Build's success, with Deploy's entry
        ("attributes", {"PipelineStatus": "Succeeded"}),
        ("memo", sorted([EXECUTION_KEY, STAGE_KEY_PREFIX + "Deploy"])),  # Deploy's success, with the end
    ]


def test_a_two_stage_success_is_codepipelines_state_machine() -> None:
    recorder, _ = started()
    for index in (0, 1):
        stage = recorder.stage_started(index, None, None)
        recorder.stage_finished(index, succeeded(stage))
    recorder.finished(ExecutionStatus.SUCCEEDED, None)
    steps = [(t.scope, t.stage_name, t.action_name, t.from_status, t.to_status) for t in recorder.transitions]
    pipeline, stage, action = TransitionScope.PIPELINE, TransitionScope.STAGE, TransitionScope.ACTION
    assert steps == [
        (pipeline, None, None, None, ExecutionStatus.IN_PROGRESS),
        (stage, "Build", None, None, StageStatus.IN_PROGRESS),
        (action, "Build", "Go", None, ActionStatus.IN_PROGRESS),
        (action, "Build", "Go", ActionStatus.IN_PROGRESS, ActionStatus.SUCCEEDED),
        (stage, "Build", None, StageStatus.IN_PROGRESS, StageStatus.SUCCEEDED),
        (stage, "Deploy", None, None, StageStatus.IN_PROGRESS),
        (action, "Deploy", "Go", None, ActionStatus.IN_PROGRESS),
        (action, "Deploy", "Go", ActionStatus.IN_PROGRESS, ActionStatus.SUCCEEDED),
        (stage, "Deploy", None, StageStatus.IN_PROGRESS, StageStatus.SUCCEEDED),
        (pipeline, None, None, ExecutionStatus.IN_PROGRESS, ExecutionStatus.SUCCEEDED),
    ]
    assert [t.at for t in recorder.transitions] == sorted(t.at for t in recorder.transitions)


def test_a_failure_is_written_at_once_and_a_retry_reopens_the_execution() -> None:
    recorder, writer = started()
    build = recorder.stage_started(0, None, None)
    failed = build.model_copy(update={"status": StageStatus.FAILED, "error": ErrorDetails(code="X", message="boom")})
    recorder.stage_finished(0, StageResult(state=failed))
    assert writer.writes[-1] == ("memo", [STAGE_KEY_PREFIX + "Build"])  # not kept for later
    recorder.finished(ExecutionStatus.FAILED, "stage 'Build' failed: boom")
    retry = StageRetryRequest(stage_name="Build", by="alice")
    recorder.resumed(retry)
    again = recorder.stage_started(0, retry, StageResult(state=failed))
    assert again.attempt == 2 and again.error is None
    assert [(a.attempt, a.status, a.retried_by) for a in again.previous_attempts] == [(1, StageStatus.FAILED, "alice")]
    statuses = [(t.from_status, t.to_status) for t in recorder.transitions if t.scope != TransitionScope.ACTION]
    assert statuses == [
        (None, ExecutionStatus.IN_PROGRESS),
        (None, StageStatus.IN_PROGRESS),
        (StageStatus.IN_PROGRESS, StageStatus.FAILED),
        (ExecutionStatus.IN_PROGRESS, ExecutionStatus.FAILED),
        (ExecutionStatus.FAILED, ExecutionStatus.IN_PROGRESS),
        (StageStatus.FAILED, StageStatus.IN_PROGRESS),
    ]
    assert recorder.transitions[4].reason == "stage 'Build' retried (FAILED_ACTIONS) by alice"


def test_stopping_only_while_in_progress() -> None:
    recorder, writer = started()
    recorder.stopping("stopped by bob: enough")
    assert recorder.state.status == ExecutionStatus.STOPPING
    assert writer.writes[-1] == ("attributes", {"PipelineStatus": "Stopping"})
    recorder.finished(ExecutionStatus.STOPPED, "stopped by bob: enough")
    count = len(writer.writes)
    recorder.stopping("again")
    assert recorder.state.status == ExecutionStatus.STOPPED and len(writer.writes) == count


def test_a_failure_received_closes_what_was_running_with_the_execution() -> None:
    recorder, writer = started()
    recorder.stage_started(0, None, None)
    recorder.failed(ErrorDetails(code="ActivityError", message="coordinator gone"))
    build = recorder.state.stages[0]
    assert build.status == StageStatus.FAILED and build.error is not None
    assert writer.writes[-1] == ("memo", sorted([EXECUTION_KEY, STAGE_KEY_PREFIX + "Build"]))  # in one write
    assert writer.writes[-2] == ("attributes", {"PipelineStatus": "Failed"})
    last = recorder.transitions[-2:]
    assert [(t.scope, t.to_status) for t in last] == [
        (TransitionScope.STAGE, StageStatus.FAILED),
        (TransitionScope.PIPELINE, ExecutionStatus.FAILED),
    ]
    assert recorder.state.status_summary == "execution failed: coordinator gone"


def test_skips_and_condition_failures() -> None:
    recorder, _ = started()
    build = recorder.state.stages[0]
    recorder.stage_failed_condition(build, ErrorDetails(code="ConditionFailed", message="beforeentry condition failed"))
    assert build.status == StageStatus.FAILED and build.error is not None
    recorder.stage_skipped(build, "onFailure: SKIP", keep_error=True)
    assert build.status == StageStatus.SKIPPED and build.error is not None
    recorder.stage_skipped(build, "beforeEntry condition: SKIP", keep_error=False)
    assert build.error is None
    assert [t.to_status for t in recorder.transitions[1:]] == [StageStatus.FAILED, StageStatus.SKIPPED]


def test_stages_succeeded_attribute_lists_every_stage_so_far() -> None:
    recorder, writer = started()
    recorder.stage_succeeded("Build")
    recorder.stage_succeeded("Deploy")
    assert writer.writes[-1] == ("attributes", {PIPELINE_STAGES_SUCCEEDED.name: ["Build", "Deploy"]})
    assert PIPELINE_STATUS.name == "PipelineStatus"
