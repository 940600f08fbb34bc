"""The `PipelineExecution` workflow: one run of a pipeline, pinned to the declaration it started with.

Validates its input (so a bad declaration sent with `temporal workflow start` fails with readable
messages), then runs each stage as a `PipelineStage` child workflow, in order, handing each only the
variables and artifact references it uses. Keeps a compact, secret-free copy of its state in its
memo (one key per stage, so each upsert writes only what changed) and `PipelineStatus` in a search
attribute, so `conveyor status` and `list` work with no worker and after the workflow has closed.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from conveyor.interface import (
        Activity,
        ConditionKind,
        Coordination,
        EntryDecision,
        Query,
        ReleaseOutcome,
        RetryMode,
        Signal,
        Update,
        WorkflowType,
        split_execution_workflow_id,
        stage_workflow_id,
    )
    from conveyor.memo import execution_memo, stage_memo
    from conveyor.model import (
        ActionContext,
        ActionOutcome,
        ArtifactRef,
        CompensationState,
        CompensationStatus,
        CompensationStep,
        ConditionOverride,
        ConditionState,
        ConditionStatus,
        CoordinationRequest,
        ErrorDetails,
        ExecutionInput,
        ExecutionSlot,
        ExecutionState,
        ExecutionStatus,
        RollbackStart,
        StageAttempt,
        StageEntryDecision,
        StageEntryRequest,
        StageFactsRequest,
        StageInput,
        StageLock,
        StageRelease,
        StageResult,
        StageRetryRequest,
        StageState,
        StageStatus,
        StopRequest,
        nullable,
    )
    from conveyor.providers.registry import compensation_call
    from conveyor.search_attributes import (
        PIPELINE_NAME,
        PIPELINE_STAGES_SUCCEEDED,
        PIPELINE_STATUS,
        PIPELINE_TRIGGER,
        PIPELINE_VERSION,
    )
    from conveyor.settings import compensation_log_name
    from conveyor.spec.declaration import (
        RETRY_WINDOW_ADVICE,
        Condition,
        ExecutionMode,
        FailureResult,
        Pipeline,
        RetryConfiguration,
        Stage,
    )
    from conveyor.spec.validation import format_path, validate_pipeline
    from conveyor.variables import PIPELINE_VARIABLES, RESERVED, namespaces_used
    from workflows.conditions import ConditionContext
    from workflows.conditions import evaluate as evaluate_conditions
    from workflows.stage import INFRASTRUCTURE_RETRY, StageWorkflow, failure_details, initial_stage_state


COMPENSATION_ATTEMPTS = 3


@workflow.defn(name=WorkflowType.EXECUTION.value)
class PipelineExecutionWorkflow:
    def __init__(self) -> None:
        self._state: ExecutionState | None = None
        self._pipeline: Pipeline | None = None
        self._decisions: dict[str, StageEntryDecision] = {}
        self._current_stage: Stage | None = None  # held, or waited for
        self._leaving: StageRelease | None = None  # a release sent with the next stage's request
        # PARALLEL mode: no stage lock; the coordinator hears of it only while held at a disabled transition.
        self._parallel = False
        self._memo_pending: dict[str, Any] = {}  # memo fields to upsert with the next upsert
        self._succeeded_stages: list[str] = []
        self._stop: StopRequest | None = None
        self._running_stage: str | None = None  # workflow id of the stage child now running
        self._retryable_stage: str | None = None  # set while a failed execution's retry window is open
        self._retry_request: StageRetryRequest | None = None
        self._last_results: dict[str, StageResult] = {}
        self._evaluating: tuple[str, str] | None = None  # (stage, kind) of the conditions under way
        self._overrides: dict[tuple[str, str], ConditionOverride] = {}

    @workflow.query(name=Query.STATE)
    def state(self) -> ExecutionState | None:
        return self._state

    @workflow.run
    async def run(self, raw_input: Any) -> ExecutionState:
        """`raw_input` is an `ExecutionInput` as JSON. It is taken as anything and validated here: an
        input that failed to decode would otherwise retry the first workflow task forever."""
        info = workflow.info()
        pipeline_name, execution_id = split_execution_workflow_id(info.workflow_id)
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
        attributes: list[SearchAttributeUpdate[Any]] = [
            PIPELINE_NAME.value_set(pipeline.name),
            PIPELINE_VERSION.value_set(state.pipeline_version),
            PIPELINE_STATUS.value_set(ExecutionStatus.IN_PROGRESS.value),
            PIPELINE_TRIGGER.value_set(state.trigger.trigger_type.value),
        ]
        # Only what the starter did not set (`conveyor start` sets them all): one visibility write fewer.
        present = workflow.info().typed_search_attributes
        attributes = [pair for pair in attributes if present.get(pair.key) != pair.value]
        if attributes:
            workflow.upsert_search_attributes(attributes)
        self._upsert_memo(execution_memo(state), later=True)  # with the first stage's entry

        values: dict[str, dict[str, str]] = {
            PIPELINE_VARIABLES: dict(state.variables),
            RESERVED: {"PipelineExecutionId": state.execution_id, "PipelineName": pipeline.name},
        }
        artifacts: dict[str, ArtifactRef] = {}
        last = len(pipeline.stages)
        if input.rollback is not None:
            # A ROLLBACK execution re-runs one stage with the inputs an earlier execution gave it.
            first = next(i for i, s in enumerate(pipeline.stages) if s.name == input.rollback.stage_name)
            last = first + 1
            state.execution_type, state.rollback_of = "ROLLBACK", input.rollback.target_execution_id
            state.rollback_stage = input.rollback.stage_name
            state.source_revisions = list(input.rollback.source_revisions)
            values.update(input.rollback.variables)
            artifacts.update({ref.name: ref for ref in input.rollback.artifacts})
            self._upsert_memo(execution_memo(state, with_stages=False))
        self._pipeline = pipeline
        self._parallel = pipeline.execution_mode == ExecutionMode.PARALLEL
        try:
            index, retry = (last - 1 if input.rollback else 0), None
            while index < last:
                stage = pipeline.stages[index]
                if self._stop is not None:
                    await self._send_leaving()
                    await self._finish(ExecutionStatus.STOPPED, self._stop_summary(f"before stage '{stage.name}'"))
                    return state
                decision = await self._enter_stage(stage)
                if decision is not None and decision.decision == EntryDecision.SUPERSEDED:
                    summary = f"superseded by {decision.superseded_by} while waiting to enter stage '{stage.name}'"
                    await self._finish(ExecutionStatus.SUPERSEDED, summary)
                    return state
                if decision is not None and decision.decision == EntryDecision.WITHDRAWN:
                    await self._finish(ExecutionStatus.STOPPED, self._stop_summary(f"waiting for stage '{stage.name}'"))
                    return state
                if stage.before_entry is not None:
                    outcome = await self._conditions(
                        ConditionKind.BEFORE_ENTRY, stage, index, stage.before_entry.conditions, values, artifacts
                    )
                    if outcome is not None:  # a beforeEntry condition failed: FAIL or SKIP, the stage never runs
                        stage_state = state.stages[index]
                        skipped = outcome == "SKIP"
                        stage_state.status = StageStatus.SKIPPED if skipped else StageStatus.FAILED
                        stage_state.error = None if skipped else _condition_error(stage_state.conditions[-1])
                        self._upsert_memo(stage_memo(stage_state))
                        await self._leave_stage(stage, ReleaseOutcome(stage_state.status.value))
                        if skipped:
                            index += 1
                            continue
                        summary = f"stage '{stage.name}' failed: {stage_state.error.message}"  # type: ignore[union-attr]
                        await self._finish(ExecutionStatus.FAILED, summary)
                        retry = await self._wait_for_manual_retry(pipeline, stage)
                        if retry is not None:
                            continue  # retried or overridden: enter the stage again
                        raise ApplicationError(summary, type="PipelineExecutionFailed", non_retryable=True)
                result = await self._run_stage(pipeline, stage, index, values, artifacts, input, retry)
                result = await self._retry_automatically(pipeline, stage, index, values, artifacts, input, result)
                condition_rollback = False
                if result.state.status == StageStatus.SUCCEEDED and stage.on_success is not None:
                    outcome = await self._conditions(
                        ConditionKind.ON_SUCCESS, stage, index, stage.on_success.conditions, values, artifacts
                    )
                    if outcome is not None:  # the stage succeeded, but its onSuccess condition did not
                        result.state.status = StageStatus.FAILED
                        result.state.error = _condition_error(result.state.conditions[-1])
                        condition_rollback = outcome == "ROLLBACK"
                        self._upsert_memo(stage_memo(result.state))
                elif result.state.status == StageStatus.FAILED and stage.on_failure and stage.on_failure.conditions:
                    outcome = await self._conditions(
                        ConditionKind.ON_FAILURE, stage, index, stage.on_failure.conditions, values, artifacts
                    )
                    condition_rollback = outcome == "ROLLBACK"
                outcome = ReleaseOutcome(result.state.status.value) if result.state.status else ReleaseOutcome.FAILED
                succeeded = result.state.status == StageStatus.SUCCEEDED
                if not self._parallel and succeeded and index + 1 < last:
                    self._leaving = self._release(stage, outcome)  # told with the next stage's request
                    self._current_stage = None
                else:
                    await self._leave_stage(stage, outcome)
                if result.state.status == StageStatus.STOPPED:
                    await self._finish(ExecutionStatus.STOPPED, self._stop_summary(f"in stage '{stage.name}'"))
                    return state
                if result.state.status != StageStatus.SUCCEEDED:
                    if stage.on_failure and stage.on_failure.result == FailureResult.SKIP:
                        state.stages[index].status = StageStatus.SKIPPED
                        self._upsert_memo(stage_memo(state.stages[index]))
                        index += 1
                        continue
                    assert result.state.error is not None
                    summary = f"stage '{stage.name}' failed: {result.state.error.message}"
                    rolls_back = condition_rollback or (
                        stage.on_failure is not None and stage.on_failure.result == FailureResult.ROLLBACK
                    )
                    if rolls_back or pipeline.conveyor.compensate_earlier_stages:
                        await self._compensate(pipeline, index, earlier=pipeline.conveyor.compensate_earlier_stages)
                    if rolls_back and input.rollback is None:
                        # Recorded before the status turns terminal: whoever waits on it sees the rollback.
                        note = await self._start_automatic_rollback(pipeline, stage, input)
                        await self._finish(ExecutionStatus.FAILED, f"{summary}; {note}")
                        raise ApplicationError(summary, type="PipelineExecutionFailed", non_retryable=True)
                    await self._finish(ExecutionStatus.FAILED, summary)
                    retry = await self._wait_for_manual_retry(pipeline, stage)
                    if retry is not None:
                        continue  # the same stage again, in the same execution (resumed by the update)
                    raise ApplicationError(summary, type="PipelineExecutionFailed", non_retryable=True)
                retry = None
                self._succeeded_stages.append(stage.name)
                workflow.upsert_search_attributes([PIPELINE_STAGES_SUCCEEDED.value_set(self._succeeded_stages)])
                index += 1
        except BaseException as err:
            if is_cancelled_exception(err) and not state.status.is_terminal:
                # Temporal's own cancel is an abandon: the stage child is cancelled with us (its actions'
                # processes killed); record where we stopped and give back the stage we held or waited for.
                await self._send_leaving()  # in case the request that carried it was cancelled
                if self._current_stage is not None:
                    await self._leave_stage(self._current_stage, ReleaseOutcome.STOPPED)
                await self._finish(ExecutionStatus.STOPPED, "cancelled through Temporal (abandoned)")
            elif isinstance(err, FailureError) and not state.status.is_terminal:
                # A failure received from an activity or child, or raised for a bad value found at run
                # time: it fails the workflow, so record it first. Any other exception is a bug that fails
                # the workflow *task*, which Temporal retries (a fixed worker resumes the execution).
                await self._record_failure(err)
            raise
        await self._finish(ExecutionStatus.SUCCEEDED, None)
        return state

    def _source_authors(self) -> list[str]:
        """Who wrote the source revisions (Git sources' AuthorEmail and AuthorName), for separation of duties."""
        authors: set[str] = set()
        for result in self._last_results.values():
            for action in result.state.actions:
                if action.provider == "Git":
                    authors.update(
                        v for k, v in action.output_variables.items() if k in ("AuthorEmail", "AuthorName") and v
                    )
        return sorted(authors)

    # --- stage conditions ------------------------------------------------------------------------

    async def _conditions(
        self,
        kind: ConditionKind,
        stage: Stage,
        index: int,
        conditions: list[Condition],
        values: dict[str, dict[str, str]],
        artifacts: dict[str, ArtifactRef],
    ) -> str | None:
        """Evaluate a stage's conditions of one kind; None, or the failing condition's result."""
        assert self._state is not None and self._pipeline is not None
        stage_state = self._state.stages[index]
        key = (stage.name, kind)
        self._evaluating = key
        self._flush_memo()  # conditions can take a while: the memo must be current

        def changed() -> None:
            self._upsert_memo(stage_memo(stage_state))

        context = ConditionContext(
            pipeline_name=self._pipeline.name,
            execution_id=self._state.execution_id,
            stage_name=stage.name,
            stage_attempt=max(stage_state.attempt, 1),
            values=values,
            artifacts=artifacts,
            heartbeat_seconds=self._pipeline.conveyor.heartbeat_timeout_seconds,
            overridden=lambda: key in self._overrides,
            changed=changed,
        )
        try:
            outcome = await evaluate_conditions(kind, conditions, context, stage_state.conditions)
        finally:
            self._evaluating = None
        if key in self._overrides:
            override = self._overrides.pop(key)
            if stage_state.conditions:
                stage_state.conditions[-1].status = ConditionStatus.OVERRIDDEN
                stage_state.conditions[-1].overridden_by = override.by
                stage_state.conditions[-1].overridden_at = workflow.now()
                stage_state.conditions[-1].override_reason = override.reason
            changed()
            return None
        return outcome

    @workflow.update(name=Update.OVERRIDE_CONDITION)
    def override_condition(self, override: ConditionOverride) -> ExecutionState:
        assert self._state is not None
        self._overrides[(override.stage_name, override.condition_type)] = override
        if self._state.status == ExecutionStatus.FAILED and self._retryable_stage == override.stage_name:
            # A failed beforeEntry condition: the override resumes the execution into the stage.
            self._retry_request = StageRetryRequest(
                stage_name=override.stage_name, retry_mode=RetryMode.ALL_ACTIONS, by=override.by
            )
            self._resume(self._retry_request)
        return self._state

    @override_condition.validator
    def _validate_override(self, override: ConditionOverride) -> None:
        if override.condition_type not in (ConditionKind.BEFORE_ENTRY, ConditionKind.ON_SUCCESS):
            raise ApplicationError(f"condition type '{override.condition_type}': use BEFORE_ENTRY or ON_SUCCESS")
        key = (override.stage_name, override.condition_type)
        waiting = self._evaluating == key
        failed_before_entry = (
            override.condition_type == ConditionKind.BEFORE_ENTRY
            and self._state is not None
            and self._state.status == ExecutionStatus.FAILED
            and self._retryable_stage == override.stage_name
            and self._retry_request is None
        )
        if not (waiting or failed_before_entry):
            raise ApplicationError(
                f"no {override.condition_type} condition of stage '{override.stage_name}' is being evaluated "
                "or holding the execution (a failed beforeEntry needs conveyor.retryWindowMinutes)"
            )

    # --- compensation and rollback ---------------------------------------------------------------

    async def _compensate(self, pipeline: Pipeline, failed_index: int, *, earlier: bool) -> None:
        """Undo what was done, in reverse order of start: the failed stage's started actions, then (a saga
        across stages) the stages completed before it. Shielded: a cancel does not interrupt it."""
        steps: list[CompensationStep] = []
        indexes = range(failed_index, -1, -1) if earlier else [failed_index]
        for i in indexes:
            result = self._last_results.get(pipeline.stages[i].name)
            if result is not None:
                steps += sorted(result.compensations, key=lambda c: c.sequence, reverse=True)
        if not steps:
            return
        task = asyncio.create_task(self._run_compensations(pipeline, steps))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task  # keep compensating, then let the cancellation through
            raise

    async def _run_compensations(self, pipeline: Pipeline, steps: list[CompensationStep]) -> None:
        assert self._state is not None
        for step in steps:
            stage_state = self._state.stage(step.stage_name)
            assert stage_state is not None
            action = next(a for a in stage_state.actions if a.action_name == step.action_name)
            progress = CompensationState(status=CompensationStatus.IN_PROGRESS, started_at=workflow.now())
            action.compensation = progress
            self._upsert_memo(stage_memo(stage_state))
            while True:
                try:
                    call = compensation_call(
                        step,
                        ActionContext(
                            pipeline_name=pipeline.name,
                            execution_id=self._state.execution_id,
                            stage_name=step.stage_name,
                            action_name=compensation_log_name(step.action_name),
                            stage_attempt=stage_state.attempt,
                            action_attempt=progress.attempt,
                        ),
                    )
                    await workflow.execute_activity(
                        call.activity,
                        call.input,
                        result_type=ActionOutcome,
                        start_to_close_timeout=call.timeout,
                        heartbeat_timeout=timedelta(seconds=pipeline.conveyor.heartbeat_timeout_seconds),
                        retry_policy=INFRASTRUCTURE_RETRY,
                    )
                    progress.status = CompensationStatus.SUCCEEDED
                    break
                except ActivityError as err:
                    cause = err.cause
                    progress.error = ErrorDetails(
                        code=getattr(cause, "type", None) or "CompensationError",
                        message=getattr(cause, "message", None) or str(cause or err),
                    )
                    if progress.attempt >= COMPENSATION_ATTEMPTS:
                        progress.status = CompensationStatus.FAILED  # recorded; the remaining compensations still run
                        break
                    await workflow.sleep(timedelta(seconds=2**progress.attempt))
                    progress.attempt += 1
            progress.finished_at = workflow.now()
            self._upsert_memo(stage_memo(stage_state))

    async def _stage_facts(self, stage_name: str) -> StageLock | None:
        assert self._pipeline is not None
        request = StageFactsRequest(pipeline_name=self._pipeline.name, stage_name=stage_name)
        if self._parallel:  # the coordinator does not know: visibility, for executions started after this one
            request.execution_mode = ExecutionMode.PARALLEL
            request.started_after = workflow.info().start_time
        facts: StageLock | None = await workflow.execute_local_activity(
            Activity.STAGE_FACTS,
            request,
            result_type=nullable(StageLock),
            start_to_close_timeout=timedelta(seconds=30),
        )
        return facts

    async def _start_automatic_rollback(self, pipeline: Pipeline, stage: Stage, input: ExecutionInput) -> str:
        """As CodePipeline does: a new ROLLBACK execution re-runs the stage with the inputs of the last
        execution that succeeded in it (an exact fact from the coordinator), if there is one."""
        assert self._state is not None
        facts = await self._stage_facts(stage.name)
        target = facts.last_succeeded if facts else None
        if target is None or target.pipeline_version != self._state.pipeline_version:
            return f"no earlier success in '{stage.name}' to roll back to"
        rollback_id: str = await workflow.execute_activity(
            Activity.START_ROLLBACK,
            RollbackStart(
                pipeline=input.pipeline,
                stage_name=stage.name,
                target_execution_id=target.execution_id,
                failed_execution_id=self._state.execution_id,
                started_by=input.started_by,
            ),
            result_type=str,
            start_to_close_timeout=timedelta(minutes=1),
        )
        self._state.rollback_execution = rollback_id
        return f"rolled back by execution {rollback_id}"

    # --- stop and retry -----------------------------------------------------------------------------

    @workflow.update(name=Update.STOP)
    async def stop(self, request: StopRequest) -> ExecutionState:
        assert self._state is not None
        self._stop = request
        if self._state.status == ExecutionStatus.IN_PROGRESS:
            self._state.status = ExecutionStatus.STOPPING
            self._state.status_summary = self._stop_summary("")
            workflow.upsert_search_attributes([PIPELINE_STATUS.value_set(ExecutionStatus.STOPPING.value)])
        if self._running_stage is not None:
            await workflow.get_external_workflow_handle(self._running_stage).signal(Signal.STOP, request)
        return self._state

    @stop.validator
    def _validate_stop(self, request: StopRequest) -> None:
        state = self._state
        if state is None:
            raise ApplicationError("the execution has not started yet")
        retryable = state.status == ExecutionStatus.FAILED and self._retryable_stage is not None
        if state.status.is_terminal and not retryable:
            raise ApplicationError(f"execution {state.execution_id} has already ended: {state.status.value}")
        if self._stop is not None and self._stop.abandon:
            raise ApplicationError("the execution is already being abandoned")
        if self._stop is not None and not request.abandon:
            raise ApplicationError(
                "a stop is already in progress (waiting for running actions to finish); escalate it with abandon"
            )

    def _stop_summary(self, where: str) -> str:
        assert self._stop is not None
        how = "abandoned" if self._stop.abandon else "stopped"
        who = f" by {self._stop.by}" if self._stop.by else ""
        at = f" {where}" if where else ""
        return f"{how}{who}{at}: {self._stop.reason or 'no reason given'}"

    @workflow.update(name=Update.RETRY_STAGE)
    async def retry_stage(self, request: StageRetryRequest) -> ExecutionState:
        assert self._state is not None and self._pipeline is not None
        # CodePipeline's rule: no retry once a newer execution has entered the stage.
        facts = await self._stage_facts(request.stage_name)
        newest = facts.newest_entered if facts else None
        if newest is not None and newest.execution_id != self._state.execution_id:
            raise ApplicationError(
                f"a newer execution ({newest.execution_id}) has entered stage '{request.stage_name}' since; "
                "retry that one, or start a new execution"
            )
        if self._retryable_stage != request.stage_name:  # the window closed while we asked
            raise ApplicationError(f"execution {self._state.execution_id} can no longer be retried")
        self._retry_request = request
        self._resume(request)
        return self._state

    @retry_stage.validator
    def _validate_retry(self, request: StageRetryRequest) -> None:
        state = self._state
        if state is None or state.status != ExecutionStatus.FAILED:
            status = state.status.value if state else "not started"
            raise ApplicationError(f"only a failed execution can be retried; this one is {status}")
        if self._retryable_stage is None:
            raise ApplicationError(f"the retry window of this execution has closed: {RETRY_WINDOW_ADVICE}")
        if request.stage_name != self._retryable_stage:
            raise ApplicationError(f"only the failed stage '{self._retryable_stage}' can be retried")
        if request.retry_mode not in tuple(RetryMode):
            raise ApplicationError(f"retry mode '{request.retry_mode}': use FAILED_ACTIONS or ALL_ACTIONS")
        if self._retry_request is not None:
            raise ApplicationError("a retry of this execution is already under way")

    async def _wait_for_manual_retry(self, pipeline: Pipeline, stage: Stage) -> StageRetryRequest | None:
        """A failed execution stays open (PipelineStatus Failed) for its retry window."""
        window = pipeline.conveyor.retry_window_minutes
        if window <= 0 or self._stop is not None:
            return None
        self._retryable_stage = stage.name
        try:
            await workflow.wait_condition(
                lambda: self._retry_request is not None or self._stop is not None, timeout=timedelta(minutes=window)
            )
        except TimeoutError:
            pass
        self._retryable_stage = None
        request, self._retry_request = self._retry_request, None
        return None if self._stop is not None else request

    def _resume(self, retry: StageRetryRequest) -> None:
        assert self._state is not None
        self._state.status = ExecutionStatus.IN_PROGRESS
        self._state.status_summary = (
            f"stage '{retry.stage_name}' retried ({retry.retry_mode}) by {retry.by or 'unknown'}"
        )
        self._state.finished_at = None
        workflow.upsert_search_attributes([PIPELINE_STATUS.value_set(ExecutionStatus.IN_PROGRESS.value)])
        self._upsert_memo(execution_memo(self._state, with_stages=False))

    async def _retry_automatically(
        self,
        pipeline: Pipeline,
        stage: Stage,
        index: int,
        values: dict[str, dict[str, str]],
        artifacts: dict[str, ArtifactRef],
        input: ExecutionInput,
        result: StageResult,
    ) -> StageResult:
        """onFailure RETRY: retry the stage on its own, up to `conveyor.automaticRetries` times."""
        on_failure = stage.on_failure
        if on_failure is None or on_failure.result != FailureResult.RETRY:
            return result
        mode = (on_failure.retry_configuration or RetryConfiguration()).retry_mode
        for _ in range(stage.conveyor.automatic_retries):
            if result.state.status != StageStatus.FAILED or self._stop is not None:
                break
            request = StageRetryRequest(stage_name=stage.name, retry_mode=mode, by="onFailure: RETRY")
            result = await self._run_stage(pipeline, stage, index, values, artifacts, input, request)
        return result

    async def _run_stage(
        self,
        pipeline: Pipeline,
        stage: Stage,
        index: int,
        values: dict[str, dict[str, str]],
        artifacts: dict[str, ArtifactRef],
        input: ExecutionInput,
        retry: StageRetryRequest | None = None,
    ) -> StageResult:
        assert self._state is not None
        state = self._state
        stage_state = state.stages[index]
        previous = self._last_results.get(stage.name) if retry is not None else None
        if previous is not None:
            assert retry is not None
            stage_state.previous_attempts.append(_attempt_summary(previous.state, retry))
            stage_state.error = None
        stage_state.status = StageStatus.IN_PROGRESS
        stage_state.attempt += 1
        stage_state.started_at = workflow.now()
        self._upsert_memo(stage_memo(stage_state))
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
            retry_mode=RetryMode(retry.retry_mode) if retry else None,
            started_by=state.started_by,
            source_authors=self._source_authors(),
            source_revisions_seen=list(state.source_revisions),
            artifact_digests={name: ref.digest for name, ref in sorted(artifacts.items())},
            previous=previous if retry and retry.retry_mode == RetryMode.FAILED_ACTIONS else None,
        )
        child_id = stage_workflow_id(pipeline.name, state.execution_id, stage.name)
        self._running_stage = child_id
        try:
            result = await workflow.execute_child_workflow(
                StageWorkflow.run,
                stage_input,
                id=child_id,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                static_summary=f"{pipeline.name} {state.execution_id}: stage {stage.name}",
            )
        except ChildWorkflowError as err:
            if is_cancelled_exception(err):
                stage_state.status = StageStatus.STOPPED
                raise
            result = _failed_stage_result(err, stage_state)
        finally:
            self._running_stage = None
        result.state.previous_attempts = stage_state.previous_attempts
        result.state.conditions = stage_state.conditions
        self._last_results[stage.name] = result
        state.stages[index] = result.state
        for namespace, outputs in result.output_variables.items():
            values[namespace] = outputs
        for ref in result.output_artifacts:
            artifacts[ref.name] = ref
        state.source_revisions.extend(result.source_revisions)
        # A success is told with whatever comes next (the next stage's entry, its conditions, the end).
        self._upsert_memo(stage_memo(result.state), later=result.state.status == StageStatus.SUCCEEDED)
        return result

    def _upsert_memo(self, fields: dict[str, Any], *, later: bool = False) -> None:
        """Upsert memo fields, with any kept for later; `later` keeps these for the next upsert (or the
        next wait, `_flush_memo`): one visibility write instead of two."""
        self._memo_pending |= fields
        if not later:
            self._flush_memo()

    def _flush_memo(self) -> None:
        if self._memo_pending:
            workflow.upsert_memo(self._memo_pending)
            self._memo_pending = {}

    # --- the seam with the pipeline's coordinator -------------------------------------------------

    @workflow.signal(name=Signal.STAGE_DECISION)
    def stage_decision(self, decision: StageEntryDecision) -> None:
        self._decisions[decision.stage_name] = decision

    async def _enter_stage(self, stage: Stage) -> StageEntryDecision | None:
        """Ask the coordinator to enter `stage`; in SUPERSEDED and QUEUED modes wait for its answer
        (the stage's lock, or being superseded). PARALLEL executions enter at once unless the inbound
        transition is disabled, then wait to be let in."""
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
            execution_mode=mode,
            leaving=self._leaving,
        )
        if self._parallel:
            # Enter at once unless the inbound transition is disabled; then held by the coordinator.
            decision = await self._coordinate(Coordination.ENTER_PARALLEL, entry=request)
            if decision is not None:
                self._current_stage = None  # the coordinator never heard of it: nothing to give back
                return decision
        else:
            # An update: a free stage is entered at once, without waiting for a signal.
            decision = await self._coordinate(Coordination.ENTER_STAGE, entry=request)
            self._leaving = None
            if decision is not None:
                return decision
        state.waiting_for_stage = stage.name
        self._flush_memo()  # the wait may be long: the memo must be current
        await workflow.wait_condition(lambda: stage.name in self._decisions or self._stop is not None)
        state.waiting_for_stage = None
        if stage.name not in self._decisions:  # stopped while it waited: give up its place in the queue
            await self._leave_stage(stage, ReleaseOutcome.WITHDRAWN)
            return StageEntryDecision(stage_name=stage.name, decision=EntryDecision.WITHDRAWN)
        if self._parallel:
            self._current_stage = None  # let in at the transition: the coordinator keeps nothing of it
        return self._decisions[stage.name]

    async def _leave_stage(self, stage: Stage, outcome: ReleaseOutcome) -> None:
        """Tell the coordinator the stage is free again (and whether this execution succeeded in it).
        An unlocked (PARALLEL) execution is known to it only while held at a disabled transition."""
        told = not self._parallel or self._current_stage is not None
        self._current_stage = None
        if told:
            await self._coordinate(Coordination.RELEASE_STAGE, release=self._release(stage, outcome))

    def _release(self, stage: Stage, outcome: ReleaseOutcome) -> StageRelease:
        assert self._state is not None
        return StageRelease(
            stage_name=stage.name,
            execution_id=self._state.execution_id,
            outcome=outcome,
            pipeline_version=self._state.pipeline_version,
        )

    async def _send_leaving(self) -> None:
        """A release kept for the next stage's request, when there will be no such request."""
        if self._leaving is not None:
            await self._coordinate(Coordination.RELEASE_STAGE, release=self._leaving)
            self._leaving = None

    async def _coordinate(
        self, signal: Coordination, *, entry: StageEntryRequest | None = None, release: StageRelease | None = None
    ) -> StageEntryDecision | None:
        assert self._pipeline is not None
        decision: StageEntryDecision | None = await workflow.execute_local_activity(
            Activity.COORDINATE,
            CoordinationRequest(
                pipeline_name=self._pipeline.name,
                execution_mode=self._pipeline.execution_mode,
                signal=signal,
                entry=entry,
                release=release,
            ),
            result_type=nullable(StageEntryDecision),
            start_to_close_timeout=timedelta(seconds=30),
        )
        return decision

    async def _record_failure(self, err: FailureError) -> None:
        """Failed, with the reason, in the state, memo and PipelineStatus; whatever was under way
        (a stage, its actions, a condition) is closed, so no duration keeps growing."""
        assert self._state is not None
        error = failure_details(err)
        for stage_state in self._state.close_unfinished(workflow.now(), error):
            self._upsert_memo(stage_memo(stage_state), later=True)  # with the execution's, below
        await self._finish(ExecutionStatus.FAILED, f"execution failed: {error.message}")

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
        self._upsert_memo(execution_memo(self._state, with_stages=False))


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


def _attempt_summary(state: StageState, retry: StageRetryRequest) -> StageAttempt:
    return StageAttempt(
        attempt=state.attempt,
        status=state.status,
        started_at=state.started_at,
        finished_at=state.finished_at,
        error=state.error,
        retried_by=retry.by,
        retry_mode=retry.retry_mode,
    )


def _condition_error(condition: ConditionState) -> ErrorDetails:
    """Why the stage failed on a condition: a rule that failed, or one that could not be evaluated."""
    errored = condition.status == ConditionStatus.ERRORED
    outcome = ConditionStatus.ERRORED if errored else ConditionStatus.FAILED
    rule = next((r for r in condition.rules if r.status == outcome), None)
    what = f"rule '{rule.rule_name}' ({rule.provider}): {rule.summary}" if rule else f"a rule {outcome.lower()}"
    kind = condition.kind.lower().replace("_", "")
    return ErrorDetails(
        code="ConditionErrored" if errored else "ConditionFailed",
        message=f"{kind} condition {outcome.lower()}: {what}",
    )
