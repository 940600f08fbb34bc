"""The `PipelineExecution` workflow: one run of a pipeline, pinned to the declaration it started with.

Validates its input (so a bad declaration sent with `temporal workflow start` fails with readable
messages), then runs each stage as a `PipelineStage` child workflow, in order, handing each only the
variables and artifact references it uses. Keeps a compact, secret-free copy of its state in its
memo (one key per stage, so each upsert writes only what changed) and `PipelineStatus` in a search
attribute, so `conveyor status` and `list` work with no worker and after the workflow has closed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from conveyor.memo import execution_memo, stage_memo
    from conveyor.model import (
        ArtifactRef,
        CoordinationRequest,
        ErrorDetails,
        ExecutionInput,
        ExecutionSlot,
        ExecutionState,
        ExecutionStatus,
        StageEntryDecision,
        StageEntryRequest,
        StageInput,
        StageRelease,
        StageResult,
        StageState,
        StageStatus,
    )
    from conveyor.search_attributes import (
        PIPELINE_NAME,
        PIPELINE_STAGES_SUCCEEDED,
        PIPELINE_STATUS,
        PIPELINE_TRIGGER,
        PIPELINE_VERSION,
    )
    from conveyor.spec.declaration import ExecutionMode, Pipeline, Stage
    from conveyor.spec.validation import format_path, validate_pipeline
    from conveyor.variables import PIPELINE_VARIABLES, RESERVED, namespaces_used
    from workflows.stage import StageWorkflow, initial_stage_state


# Executions recorded before the coordinator existed replay without it.
COORDINATION_PATCH = "pipeline-coordinator"


def execution_workflow_id(pipeline_name: str, execution_id: str) -> str:
    return f"{pipeline_name}/{execution_id}"


def stage_workflow_id(pipeline_name: str, execution_id: str, stage_name: str) -> str:
    return f"{pipeline_name}/{execution_id}/{stage_name}"


@workflow.defn(name="PipelineExecution")
class PipelineExecutionWorkflow:
    def __init__(self) -> None:
        self._state: ExecutionState | None = None
        self._pipeline: Pipeline | None = None
        self._decisions: dict[str, StageEntryDecision] = {}
        self._current_stage: Stage | None = None  # held, or waited for
        self._succeeded_stages: list[str] = []

    @workflow.query(name="state")
    def state(self) -> ExecutionState | None:
        return self._state

    @workflow.run
    async def run(self, raw_input: Any) -> ExecutionState:
        """`raw_input` is an `ExecutionInput` as JSON. It is taken as anything and validated here: an
        input that failed to decode would otherwise retry the first workflow task forever."""
        info = workflow.info()
        pipeline_name, _, execution_id = info.workflow_id.rpartition("/")
        self._state = ExecutionState(
            pipeline_name=pipeline_name or info.workflow_id, execution_id=execution_id, started_at=workflow.now()
        )
        try:
            input = ExecutionInput.model_validate(raw_input)
        except ValidationError as err:
            problems = [f"<execution input>: {format_path(e['loc'])}: {e['msg']}" for e in err.errors()]
            await self._finish(ExecutionStatus.FAILED, "invalid execution input:\n" + "\n".join(problems))
            raise ApplicationError(
                "invalid execution input:\n" + "\n".join(problems), type="InvalidExecutionInput", non_retryable=True
            ) from None
        report = validate_pipeline(input.pipeline)
        self._state = ExecutionState(
            pipeline_name=str(input.pipeline.get("name") or self._state.pipeline_name),
            execution_id=input.execution_id or execution_id,
            started_at=self._state.started_at,
            trigger=input.trigger,
            started_by=input.started_by,
        )
        problems = [issue.render(input.source_name) for issue in report.errors]
        pipeline = report.pipeline
        if pipeline is not None and not problems:
            problems = _undeclared_overrides(pipeline, input, input.source_name)
        if pipeline is None or problems:
            await self._finish(ExecutionStatus.FAILED, "invalid pipeline declaration:\n" + "\n".join(problems))
            raise ApplicationError(
                "invalid pipeline declaration:\n" + "\n".join(problems), type="InvalidDeclaration", non_retryable=True
            )

        state = self._state
        state.pipeline_version = pipeline.version or 1
        state.variables = {v.name: v.default_value or "" for v in pipeline.variables} | input.variables
        state.stages = [initial_stage_state(stage) for stage in pipeline.stages]
        workflow.upsert_search_attributes(
            [
                PIPELINE_NAME.value_set(pipeline.name),
                PIPELINE_VERSION.value_set(state.pipeline_version),
                PIPELINE_STATUS.value_set(ExecutionStatus.IN_PROGRESS.value),
            ]
        )
        workflow.upsert_memo(execution_memo(state))

        values: dict[str, dict[str, str]] = {
            PIPELINE_VARIABLES: dict(state.variables),
            RESERVED: {"PipelineExecutionId": state.execution_id, "PipelineName": pipeline.name},
        }
        artifacts: dict[str, ArtifactRef] = {}
        self._pipeline = pipeline
        coordinated = workflow.patched(COORDINATION_PATCH)
        if coordinated:
            workflow.upsert_search_attributes([PIPELINE_TRIGGER.value_set(state.trigger.trigger_type.value)])
        try:
            for index, stage in enumerate(pipeline.stages):
                decision = await self._enter_stage(stage) if coordinated else None
                if decision is not None and decision.decision == "Superseded":
                    summary = f"superseded by {decision.superseded_by} while waiting to enter stage '{stage.name}'"
                    await self._finish(ExecutionStatus.SUPERSEDED, summary)
                    return state
                result = await self._run_stage(pipeline, stage, index, values, artifacts, input)
                if coordinated:
                    await self._leave_stage(stage, result.state.status.value if result.state.status else "Failed")
                if result.state.status != StageStatus.SUCCEEDED:
                    assert result.state.error is not None
                    summary = f"stage '{stage.name}' failed: {result.state.error.message}"
                    await self._finish(ExecutionStatus.FAILED, summary)
                    raise ApplicationError(summary, type="PipelineExecutionFailed", non_retryable=True)
                if coordinated:
                    self._succeeded_stages.append(stage.name)
                    workflow.upsert_search_attributes([PIPELINE_STAGES_SUCCEEDED.value_set(self._succeeded_stages)])
        except BaseException as err:
            if is_cancelled_exception(err) and not state.status.is_terminal:
                # Temporal's own cancel: the stage child is cancelled with us; record where we stopped
                # and give back the stage we held or waited for, so the next execution can go on.
                if coordinated and self._current_stage is not None:
                    await self._leave_stage(self._current_stage, "Stopped")
                await self._finish(ExecutionStatus.STOPPED, "cancelled through Temporal")
            raise
        await self._finish(ExecutionStatus.SUCCEEDED, None)
        return state

    async def _run_stage(
        self,
        pipeline: Pipeline,
        stage: Stage,
        index: int,
        values: dict[str, dict[str, str]],
        artifacts: dict[str, ArtifactRef],
        input: ExecutionInput,
    ) -> StageResult:
        assert self._state is not None
        state = self._state
        stage_state = state.stages[index]
        stage_state.status = StageStatus.IN_PROGRESS
        stage_state.attempt += 1
        stage_state.started_at = workflow.now()
        workflow.upsert_memo(stage_memo(stage_state))
        workflow.logger.info(
            "stage entered",
            extra={"pipeline": pipeline.name, "execution": state.execution_id, "stage": stage.name},
        )
        stage_input = StageInput(
            pipeline_name=pipeline.name,
            execution_id=state.execution_id,
            stage=stage.model_dump(mode="json", exclude_none=True),
            attempt=stage_state.attempt,
            variables=_variables_used(stage, values),
            artifacts=_artifacts_used(stage, artifacts),
            source_revisions=input.source_revisions,
            default_heartbeat_seconds=pipeline.conveyor.heartbeat_timeout_seconds,
        )
        try:
            result = await workflow.execute_child_workflow(
                StageWorkflow.run,
                stage_input,
                id=stage_workflow_id(pipeline.name, state.execution_id, stage.name),
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                static_summary=f"{pipeline.name} {state.execution_id}: stage {stage.name}",
            )
        except ChildWorkflowError as err:
            result = _failed_stage_result(err, stage_state)
        state.stages[index] = result.state
        for namespace, outputs in result.output_variables.items():
            values[namespace] = outputs
        for ref in result.output_artifacts:
            artifacts[ref.name] = ref
        state.source_revisions.extend(result.source_revisions)
        workflow.upsert_memo(stage_memo(result.state))
        return result

    # --- the seam with the pipeline's coordinator -------------------------------------------------

    @workflow.signal(name="stage_decision")
    def stage_decision(self, decision: StageEntryDecision) -> None:
        self._decisions[decision.stage_name] = decision

    async def _enter_stage(self, stage: Stage) -> StageEntryDecision | None:
        """Ask the coordinator to enter `stage`; in SUPERSEDED and QUEUED modes wait for its answer
        (the stage's lock, or being superseded). PARALLEL executions only report the fact."""
        assert self._state is not None and self._pipeline is not None
        state, mode = self._state, self._pipeline.execution_mode
        self._decisions.pop(stage.name, None)
        self._current_stage = stage
        request = StageEntryRequest(
            stage_name=stage.name,
            execution=ExecutionSlot(
                execution_id=state.execution_id,
                workflow_id=workflow.info().workflow_id,
                started_at=workflow.info().start_time,
                pipeline_version=state.pipeline_version,
            ),
            execution_mode=mode.value,
        )
        await self._coordinate("request_entry", entry=request)
        if mode == ExecutionMode.PARALLEL:
            return None
        state.waiting_for_stage = stage.name
        await workflow.wait_condition(lambda: stage.name in self._decisions)
        state.waiting_for_stage = None
        return self._decisions[stage.name]

    async def _leave_stage(self, stage: Stage, outcome: str) -> None:
        """Tell the coordinator the stage is free again (and whether this execution succeeded in it)."""
        assert self._state is not None
        self._current_stage = None
        release = StageRelease(
            stage_name=stage.name,
            execution_id=self._state.execution_id,
            outcome=outcome,
            pipeline_version=self._state.pipeline_version,
        )
        await self._coordinate("release_stage", release=release)

    async def _coordinate(
        self, signal: str, *, entry: StageEntryRequest | None = None, release: StageRelease | None = None
    ) -> None:
        assert self._pipeline is not None
        await workflow.execute_local_activity(
            "coordinate",
            CoordinationRequest(
                pipeline_name=self._pipeline.name,
                execution_mode=self._pipeline.execution_mode.value,
                signal=signal,
                entry=entry,
                release=release,
            ),
            start_to_close_timeout=timedelta(seconds=30),
        )

    async def _finish(self, status: ExecutionStatus, summary: str | None) -> None:
        assert self._state is not None
        # workflow.logger is replay-safe: nothing is logged again when history is replayed.
        workflow.logger.info(
            "execution finished",
            extra={
                "pipeline": self._state.pipeline_name,
                "execution": self._state.execution_id,
                "status": status.value,
            },
        )
        self._state.status = status
        self._state.status_summary = summary
        self._state.finished_at = workflow.now()
        workflow.upsert_search_attributes([PIPELINE_STATUS.value_set(status.value)])
        workflow.upsert_memo(execution_memo(self._state, with_stages=False))


def _undeclared_overrides(pipeline: Pipeline, input: ExecutionInput, source: str) -> list[str]:
    declared = {v.name for v in pipeline.variables}
    problems = [
        f"{source}: variables: '{name}' is not declared in the pipeline's 'variables'; declare it or drop the override"
        for name in input.variables
        if name not in declared
    ]
    sources = {a.name for a in pipeline.stages[0].actions if a.action_type_id.category.value == "Source"}
    problems += [
        f"{source}: sourceRevisions: '{r.action_name}' is not a Source action of the pipeline"
        for r in input.source_revisions
        if r.action_name not in sources
    ]
    return problems


def _stage_texts(stage: Stage) -> list[str]:
    texts: list[str] = []
    for action in stage.actions:
        texts += list(action.configuration.values()) + list(action.commands or [])
        texts += [e.value for e in action.environment_variables] + list(action.conveyor.rollback)
    return texts


def _variables_used(stage: Stage, values: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Only the namespaces the stage references: keeps its input (and history) small."""
    used = namespaces_used(_stage_texts(stage))
    return {ns: values[ns] for ns in sorted(used) if ns in values}


def _artifacts_used(stage: Stage, artifacts: dict[str, ArtifactRef]) -> list[ArtifactRef]:
    names = {i.name for a in stage.actions for i in a.input_artifacts}
    return [artifacts[name] for name in sorted(names) if name in artifacts]


def _failed_stage_result(err: ChildWorkflowError, stage_state: StageState) -> StageResult:
    cause: Any = err.cause
    details = getattr(cause, "details", None) or ()
    if details:
        try:
            return StageResult.model_validate(details[0])
        except Exception:  # noqa: BLE001 - fall through to a generic failure
            pass
    stage_state.status = StageStatus.FAILED
    stage_state.finished_at = workflow.now()
    message = getattr(cause, "message", None) or str(err)
    stage_state.error = ErrorDetails(code="StageError", message=message)
    return StageResult(state=stage_state)
