"""The `PipelineExecution` workflow: one run of a pipeline, pinned to the declaration it started with.

Validates its input (so a bad declaration sent with `temporal workflow start` fails with readable
messages), then runs each stage as a `PipelineStage` child workflow, in order, handing each only the
variables and artifact references it uses. Keeps a compact, secret-free copy of its state in its
memo (one key per stage, so each upsert writes only what changed) and `PipelineStatus` in a search
attribute, so `conveyor status` and `list` work with no worker and after the workflow has closed.

`run` is CodePipeline's state machine: for each stage, enter (lock, transition), gate (beforeEntry), run
the stage child, judge (onSuccess/onFailure, then the failure policy), leave. Its parts, one job each:
`StageGate` (the coordinator protocol), `failure_policy` (pure rules), `CompensationSaga`, `Recorder` (the
only writer of status, memo and search attributes) and `ExecutionScope` (variables and artifacts). They
are imported through the sandbox's passthrough, like every foundation module: they hold no state.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, ChildWorkflowError, FailureError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from conveyor.artifact_locations import declared_locations
    from conveyor.event_sinks_config import SinkConfig
    from conveyor.interface import (
        Activity,
        ConditionKind,
        EntryDecision,
        Query,
        ReleaseOutcome,
        RetryMode,
        RevisionType,
        Signal,
        Update,
        WorkflowType,
        split_execution_workflow_id,
        stage_workflow_id,
    )
    from conveyor.model import (
        ConditionOverride,
        ConditionState,
        ConditionStatus,
        ErrorDetails,
        ExecutionInput,
        ExecutionState,
        ExecutionStatus,
        RollbackStart,
        StageEntryDecision,
        StageFact,
        StageInput,
        StageResult,
        StageRetryRequest,
        StageStatus,
        StopRequest,
        Transition,
    )
    from conveyor.providers.registry import PROVIDERS
    from conveyor.spec.declaration import RETRY_WINDOW_ADVICE, Condition, Pipeline, Stage
    from conveyor.spec.validation import format_path, validate_pipeline
    from workflows import failure_policy
    from workflows.compensation import CompensationSaga
    from workflows.conditions import ConditionContext
    from workflows.conditions import evaluate as evaluate_conditions
    from workflows.failure_policy import Next, StageOutcome, Verdict
    from workflows.failures import failure_details
    from workflows.outbox import Outbox, stage_origin, tell_transition
    from workflows.recorder import Recorder, WorkflowWriter
    from workflows.scope import ExecutionScope
    from workflows.stage import StageWorkflow, initial_stage_state
    from workflows.stage_gate import StageGate


@workflow.defn(name=WorkflowType.EXECUTION.value)
class PipelineExecutionWorkflow:
    def __init__(self) -> None:
        self._recorder = Recorder(WorkflowWriter(), workflow.metric_meter(), self._transitioned)
        self._events: Outbox | None = None  # the pipeline's and stages' events (a stage child sends its actions')
        self._sinks: list[SinkConfig] = []  # the pipeline's own event sinks (conveyor.events), once validated
        self._gate: StageGate | None = None
        self._saga: CompensationSaga | None = None
        self._scope: ExecutionScope | None = None
        self._input: ExecutionInput | None = None
        self._pipeline: Pipeline | None = None
        self._stop: StopRequest | None = None
        self._running_stage: str | None = None  # workflow id of the stage child now running
        self._retryable_stage: str | None = None  # set while a failed execution's retry window is open
        self._retry_request: StageRetryRequest | None = None
        self._last_results: dict[str, StageResult] = {}
        self._evaluating: tuple[str, str] | None = None  # (stage, kind) of the conditions under way
        self._overrides: dict[tuple[str, str], ConditionOverride] = {}

    @property
    def _state(self) -> ExecutionState | None:
        return self._recorder.state if self._recorder.has_state else None

    @workflow.query(name=Query.STATE)
    def state(self) -> ExecutionState | None:
        return self._state

    @workflow.query(name=Query.TRANSITIONS)
    def transitions(self) -> list[Transition]:
        """Diagnostic: every status change recorded so far (pipeline, stage, action), in order."""
        return self._recorder.transitions

    @workflow.run
    async def run(self, raw_input: Any) -> ExecutionState:
        """`raw_input` is an `ExecutionInput` as JSON. It is taken as anything and validated here: an
        input that failed to decode would otherwise retry the first workflow task forever."""
        try:
            state = await self._execute(raw_input)
        except BaseException as err:
            # Its last events leave before it ends (not on a bug that fails the workflow task: replayed anyway).
            if self._events is not None and (isinstance(err, FailureError) or is_cancelled_exception(err)):
                await self._events.drain()
            raise
        if self._events is not None:
            await self._events.drain()
        return state

    def _transitioned(self, transition: Transition) -> None:
        state = self._recorder.state
        if self._events is None:
            self._events = Outbox(state.pipeline_name, state.execution_id, "execution", state.pipeline_version)
        self._events.version = state.pipeline_version
        self._events.sinks = self._sinks  # a batch starts at the first event: the pipeline's sinks are known by then
        tell_transition(self._events, state, transition)

    async def _execute(self, raw_input: Any) -> ExecutionState:
        pipeline, stages = self._begin(raw_input)
        state, recorder = self._recorder.state, self._recorder
        try:
            retry: StageRetryRequest | None = None
            index = stages.start
            while index < stages.stop:
                stage = pipeline.stages[index]
                ended = await self._enter_stage(stage)  # the lock, the transition; or stopped, superseded, withdrawn
                if ended is not None:
                    recorder.finished(*ended)
                    return state
                verdict = await self._gate_entry(stage, index)  # beforeEntry: None lets the stage run
                if verdict is None:
                    result = await self._run_stage(stage, index, retry)
                    verdict = await self._judge(stage, index, result)  # onSuccess / onFailure
                    await self._leave(stage, index, result, verdict, more_stages=index + 1 < stages.stop)
                if verdict.next == Next.STOP:
                    await self._compensate_abandoned(stage, index, verdict)
                    recorder.finished(ExecutionStatus.STOPPED, self._stop_summary(f"in stage '{stage.name}'"))
                    return state
                if verdict.failed:
                    retry = await self._fail(stage, index, verdict)  # raises unless retried in its window
                    continue  # the same stage again, in the same execution (resumed by the update)
                if verdict.next == Next.CONTINUE:
                    retry = None
                    recorder.stage_succeeded(stage.name)
                index += 1
        except BaseException as err:
            await self._abort(err)
            raise
        recorder.finished(ExecutionStatus.SUCCEEDED, None)
        return state

    # --- the steps of a stage ---------------------------------------------------------------------------

    def _begin(self, raw_input: Any) -> tuple[Pipeline, range]:
        """Validate the input and the declaration (failing the execution with readable messages), then set
        up the state, scope, gate and saga; the stages this execution runs."""
        info = workflow.info()
        pipeline_name, execution_id = split_execution_workflow_id(info.workflow_id)
        initial = ExecutionState(
            pipeline_name=pipeline_name or info.workflow_id, execution_id=execution_id, started_at=workflow.now()
        )
        self._recorder.begin(initial)
        try:
            input = ExecutionInput.model_validate(raw_input)
        except ValidationError as err:
            problems = [f"<execution input>: {format_path(e['loc'])}: {e['msg']}" for e in err.errors()]
            self._recorder.finished(ExecutionStatus.FAILED, "invalid execution input:\n" + "\n".join(problems))
            raise ApplicationError(
                "invalid execution input:\n" + "\n".join(problems), type="InvalidExecutionInput", non_retryable=True
            ) from None
        report = validate_pipeline(input.pipeline)
        state = ExecutionState(
            pipeline_name=str(input.pipeline.get("name") or initial.pipeline_name),
            execution_id=input.execution_id or execution_id,
            started_at=initial.started_at,
            trigger=input.trigger,
            started_by=input.started_by,
        )
        self._recorder.begin(state)
        problems = [issue.render(input.source_name) for issue in report.errors]
        pipeline = report.pipeline
        if pipeline is not None and not problems:
            problems = _undeclared_overrides(pipeline, input, input.source_name)
        if pipeline is None or problems:
            self._recorder.finished(ExecutionStatus.FAILED, "invalid pipeline declaration:\n" + "\n".join(problems))
            raise ApplicationError(
                "invalid pipeline declaration:\n" + "\n".join(problems), type="InvalidDeclaration", non_retryable=True
            )
        state.pipeline_version = pipeline.version or 1
        state.variables = {v.name: v.default_value or "" for v in pipeline.variables} | input.variables
        state.stages = [initial_stage_state(stage) for stage in pipeline.stages]
        self._sinks = _pipeline_sinks(pipeline)
        self._recorder.started(pipeline)
        self._scope = ExecutionScope(pipeline.name, state.execution_id, state.variables)
        stages = range(0, len(pipeline.stages))
        if input.rollback is not None:
            # A ROLLBACK execution re-runs one stage with the inputs an earlier execution gave it.
            first = next(i for i, s in enumerate(pipeline.stages) if s.name == input.rollback.stage_name)
            stages = range(first, first + 1)
            self._scope.adopt_rollback(input.rollback)
            self._recorder.rolling_back(input.rollback)
        self._input, self._pipeline = input, pipeline
        self._gate = StageGate(pipeline, self._recorder, lambda: self._stop is not None)
        self._saga = CompensationSaga(pipeline, self._recorder, self._last_results)
        return pipeline, stages

    async def _enter_stage(self, stage: Stage) -> tuple[ExecutionStatus, str] | None:
        """Enter the stage (its lock, its inbound transition); or how the execution ends instead."""
        assert self._gate is not None
        if self._stop is not None:
            await self._gate.send_leaving()
            return ExecutionStatus.STOPPED, self._stop_summary(f"before stage '{stage.name}'")
        decision = await self._gate.enter(stage)
        if decision is not None and decision.decision == EntryDecision.SUPERSEDED:
            summary = f"superseded by {decision.superseded_by} while waiting to enter stage '{stage.name}'"
            return ExecutionStatus.SUPERSEDED, summary
        if decision is not None and decision.decision == EntryDecision.WITHDRAWN:
            return ExecutionStatus.STOPPED, self._stop_summary(f"waiting for stage '{stage.name}'")
        return None

    async def _gate_entry(self, stage: Stage, index: int) -> Verdict | None:
        """The stage's beforeEntry conditions: None when it may run; else it never runs (FAIL or SKIP)."""
        assert self._gate is not None and self._pipeline is not None
        if stage.before_entry is None:
            return None
        failed = await self._conditions(ConditionKind.BEFORE_ENTRY, stage, index, stage.before_entry.conditions)
        if failed is None:
            return None
        stage_state = self._recorder.state.stages[index]
        verdict = failure_policy.before_entry(self._pipeline, failed)
        if verdict.next == Next.SKIP:
            self._recorder.stage_skipped(stage_state, "beforeEntry condition: SKIP", keep_error=False)
        else:
            self._recorder.stage_failed_condition(stage_state, _condition_error(stage_state.conditions[-1]))
        assert stage_state.status is not None
        await self._gate.leave(stage, ReleaseOutcome(stage_state.status.value))
        return verdict

    async def _run_stage(self, stage: Stage, index: int, retry: StageRetryRequest | None) -> StageResult:
        """The stage child, and again while onFailure RETRY has automatic retries left."""
        assert self._pipeline is not None
        result = await self._run_stage_child(stage, index, retry)
        retries_left = stage.conveyor.automatic_retries
        while self._judged(stage, result, retries_left=retries_left).next == Next.RETRY_AUTOMATICALLY:
            retries_left -= 1
            result = await self._run_stage_child(stage, index, failure_policy.automatic_retry(stage))
        return result

    async def _judge(self, stage: Stage, index: int, result: StageResult) -> Verdict:
        """The stage's onSuccess (or onFailure) conditions, then what the failure policy says follows."""
        failed: str | None = None
        if result.state.status == StageStatus.SUCCEEDED and stage.on_success is not None:
            failed = await self._conditions(ConditionKind.ON_SUCCESS, stage, index, stage.on_success.conditions)
            if failed is not None:  # the stage succeeded, but its onSuccess condition did not
                error = _condition_error(result.state.conditions[-1])
                self._recorder.stage_failed_condition(result.state, error)
        elif result.state.status == StageStatus.FAILED and stage.on_failure and stage.on_failure.conditions:
            failed = await self._conditions(ConditionKind.ON_FAILURE, stage, index, stage.on_failure.conditions)
        return self._judged(stage, result, failed_condition=failed)

    def _judged(
        self, stage: Stage, result: StageResult, *, failed_condition: str | None = None, retries_left: int = 0
    ) -> Verdict:
        assert self._pipeline is not None and self._input is not None
        outcome = StageOutcome(
            status=result.state.status,
            failed_condition=failed_condition,
            retries_left=retries_left,
            stopping=self._stop is not None,
            abandoned=self._stop is not None and self._stop.abandon,
            rollback_execution=self._input.rollback is not None,
        )
        return failure_policy.after_stage(stage, self._pipeline, outcome)

    async def _leave(
        self, stage: Stage, index: int, result: StageResult, verdict: Verdict, *, more_stages: bool
    ) -> None:
        """Give the stage back to the coordinator with how it ended; onFailure SKIP then counts it Skipped."""
        assert self._gate is not None
        status = result.state.status
        outcome = ReleaseOutcome(status.value) if status else ReleaseOutcome.FAILED
        await self._gate.leave(stage, outcome, more_stages=more_stages)
        if verdict.next == Next.SKIP:
            self._recorder.stage_skipped(self._recorder.state.stages[index], "onFailure: SKIP", keep_error=True)

    async def _compensate_abandoned(self, stage: Stage, index: int, verdict: Verdict) -> None:
        """An abandoned stage that rolls back on failure: its compensations run when the rollback rule compensates
        (the saga, or a first release); where a ROLLBACK execution would redeploy instead, nothing runs."""
        assert self._saga is not None and self._pipeline is not None
        if not verdict.compensate:
            return
        if failure_policy.redeploys(self._pipeline) and await self._rollback_target(stage) is not None:
            return
        await self._saga.compensate(index, earlier=verdict.compensate_earlier_stages)

    async def _fail(self, stage: Stage, index: int, verdict: Verdict) -> StageRetryRequest:
        """The stage failed: compensate, roll back or wait for a manual retry, as the verdict says. Returns
        the retry that resumed the execution; raises (the execution fails) when none came."""
        assert self._saga is not None
        stage_state = self._recorder.state.stages[index]
        assert stage_state.error is not None
        summary = f"stage '{stage.name}' failed: {stage_state.error.message}"
        if verdict.next == Next.ROLL_BACK:
            target = await self._rollback_target(stage)
            if target is not None:
                # Recorded before the status turns terminal: whoever waits on it sees the rollback.
                note = await self._start_automatic_rollback(stage, target)
                self._recorder.finished(ExecutionStatus.FAILED, f"{summary}; {note}")
                raise ApplicationError(summary, type="PipelineExecutionFailed", non_retryable=True)
            verdict = failure_policy.without_rollback_target()
            summary += f"; no earlier success in '{stage.name}' to roll back to: its compensations ran instead"
        if verdict.compensate:
            await self._saga.compensate(index, earlier=verdict.compensate_earlier_stages)
        self._recorder.finished(ExecutionStatus.FAILED, summary)
        retry = await self._wait_for_manual_retry(stage) if verdict.next == Next.WAIT_FOR_MANUAL_RETRY else None
        if retry is None:
            raise ApplicationError(summary, type="PipelineExecutionFailed", non_retryable=True)
        return retry

    async def _abort(self, err: BaseException) -> None:
        """The execution ends on an exception: record how, unless it already ended."""
        assert self._gate is not None
        if self._recorder.state.status.is_terminal:
            return
        if is_cancelled_exception(err):
            # Temporal's own cancel is an abandon: the stage child is cancelled with us (its actions'
            # processes killed); record where we stopped and give back the stage we held or waited for.
            await self._gate.abandon()
            self._recorder.finished(ExecutionStatus.STOPPED, "cancelled through Temporal (abandoned)")
        elif isinstance(err, FailureError):
            # A failure received from an activity or child, or raised for a bad value found at run
            # time: it fails the workflow, so record it first. Any other exception is a bug that fails
            # the workflow *task*, which Temporal retries (a fixed worker resumes the execution).
            self._recorder.failed(failure_details(err))

    async def _run_stage_child(self, stage: Stage, index: int, retry: StageRetryRequest | None) -> StageResult:
        """One attempt of the stage: a `PipelineStage` child given only the variables and artifacts it uses."""
        assert self._pipeline is not None and self._scope is not None and self._input is not None
        pipeline, state, scope = self._pipeline, self._recorder.state, self._scope
        previous = self._last_results.get(stage.name) if retry is not None else None
        stage_state = self._recorder.stage_started(index, retry, previous)
        workflow.logger.info(
            "stage entered",
            extra={"pipeline": pipeline.name, "execution": state.execution_id, "stage": stage.name},
        )
        stage_input = StageInput(
            pipeline_name=pipeline.name,
            execution_id=state.execution_id,
            stage=stage.model_dump(mode="json", exclude_none=True),
            attempt=stage_state.attempt,
            pipeline_version=state.pipeline_version,
            event_sinks=_pipeline_sinks(pipeline),
            variables=scope.variables_for(stage),
            artifacts=scope.artifacts_for(stage),
            source_revisions=self._input.source_revisions,
            pipeline_role_arn=pipeline.role_arn,
            default_heartbeat_seconds=pipeline.conveyor.heartbeat_timeout_seconds,
            artifact_stores=declared_locations(pipeline),
            codebuild_runner=pipeline.conveyor.codebuild_runner,
            retry_mode=RetryMode(retry.retry_mode) if retry else None,
            started_by=state.started_by,
            source_authors=self._source_authors(),
            source_revisions_seen=list(state.source_revisions),
            artifact_digests=scope.digests(),
            reviews=[
                f"{done.stage_name}/{action.action_name}: {action.review}"
                for done in state.stages
                if done.stage_name != stage.name
                for action in done.actions
                if action.review
            ],
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
                self._recorder.stage_cancelled(stage_state)
                raise
            result = _result_carried_by(err) or self._recorder.stage_errored(stage_state, _failure_message(err))
        finally:
            self._running_stage = None
        if self._events is not None and result.undelivered_events:
            # Before the stage's own event (stage_finished): an action's events precede its stage's.
            self._events.take_over(stage_origin(stage.name, stage_state.attempt), result.undelivered_events)
        result = result.model_copy(update={"undelivered_events": []})  # sent: not carried into a retry's input
        self._last_results[stage.name] = result
        self._recorder.stage_finished(index, result)
        scope.absorb(result)
        return result

    def _source_authors(self) -> list[str]:
        """Who wrote the source revisions (the variables each source's contract names, such as a Git source's
        AuthorEmail and AuthorName), for separation of duties."""
        authors: set[str] = set()
        for result in self._last_results.values():
            for action in result.state.actions:
                contract = PROVIDERS.get(action.provider)
                names = contract.author_variables if contract else ()
                authors.update(value for name, value in action.output_variables.items() if name in names and value)
        return sorted(authors)

    # --- stage conditions ------------------------------------------------------------------------

    async def _conditions(
        self, kind: ConditionKind, stage: Stage, index: int, conditions: list[Condition]
    ) -> str | None:
        """Evaluate a stage's conditions of one kind; None, or the failing condition's result."""
        assert self._pipeline is not None and self._scope is not None
        recorder = self._recorder
        stage_state = recorder.state.stages[index]
        key = (stage.name, kind)
        self._evaluating = key
        recorder.flush_memo()  # conditions can take a while: the memo must be current
        context = ConditionContext(
            pipeline_name=self._pipeline.name,
            execution_id=recorder.state.execution_id,
            stage_name=stage.name,
            stage_attempt=max(stage_state.attempt, 1),
            values=self._scope.values,
            artifacts=self._scope.artifacts,
            heartbeat_seconds=self._pipeline.conveyor.heartbeat_timeout_seconds,
            overridden=lambda: key in self._overrides,
            changed=lambda: recorder.stage_changed(stage_state),
            pipeline_role_arn=self._pipeline.role_arn,
        )
        try:
            outcome = await evaluate_conditions(kind, conditions, context, stage_state.conditions)
        finally:
            self._evaluating = None
        if key in self._overrides:
            recorder.condition_overridden(stage_state, self._overrides.pop(key))
            return None
        return outcome

    @workflow.update(name=Update.OVERRIDE_CONDITION)
    def override_condition(self, override: ConditionOverride) -> ExecutionState:
        state = self._recorder.state
        self._overrides[(override.stage_name, override.condition_type)] = override
        if state.status == ExecutionStatus.FAILED and self._retryable_stage == override.stage_name:
            # A failed beforeEntry condition: the override resumes the execution into the stage.
            self._retry_request = StageRetryRequest(
                stage_name=override.stage_name, retry_mode=RetryMode.ALL_ACTIONS, by=override.by
            )
            self._recorder.resumed(self._retry_request)
        return state

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

    # --- rollback ---------------------------------------------------------------------------------

    async def _rollback_target(self, stage: Stage) -> StageFact | None:
        """The last execution that succeeded in the stage on this pipeline version (an exact fact from the
        coordinator), which a ROLLBACK execution redeploys; None when there is none (a first release)."""
        assert self._gate is not None
        facts = await self._gate.stage_facts(stage.name)
        target = facts.last_succeeded if facts else None
        if target is None or target.pipeline_version != self._recorder.state.pipeline_version:
            return None
        return target

    async def _start_automatic_rollback(self, stage: Stage, target: StageFact) -> str:
        """As CodePipeline does: a new ROLLBACK execution re-runs the stage with the target's inputs."""
        assert self._input is not None
        state = self._recorder.state
        rollback_id: str = await workflow.execute_activity(
            Activity.START_ROLLBACK,
            RollbackStart(
                pipeline=self._input.pipeline,
                stage_name=stage.name,
                target_execution_id=target.execution_id,
                failed_execution_id=state.execution_id,
                started_by=self._input.started_by,
            ),
            result_type=str,
            start_to_close_timeout=timedelta(minutes=1),
        )
        self._recorder.rollback_started(rollback_id)
        return f"rolled back by execution {rollback_id}"

    # --- stop and retry -----------------------------------------------------------------------------

    @workflow.signal(name=Signal.STAGE_DECISION)
    def stage_decision(self, decision: StageEntryDecision) -> None:
        # Only ever an answer to an entry request, so the gate exists (and drops any earlier decision).
        if self._gate is not None:
            self._gate.decided(decision)

    @workflow.update(name=Update.STOP)
    async def stop(self, request: StopRequest) -> ExecutionState:
        self._stop = request
        self._recorder.stopping(self._stop_summary(""))
        if self._running_stage is not None:
            await workflow.get_external_workflow_handle(self._running_stage).signal(Signal.STOP, request)
        return self._recorder.state

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
        assert self._gate is not None
        state = self._recorder.state
        # CodePipeline's rule: no retry once a newer execution has entered the stage.
        facts = await self._gate.stage_facts(request.stage_name)
        newest = facts.newest_entered if facts else None
        if newest is not None and newest.execution_id != state.execution_id:
            raise ApplicationError(
                f"a newer execution ({newest.execution_id}) has entered stage '{request.stage_name}' since; "
                "retry that one, or start a new execution"
            )
        if self._retryable_stage != request.stage_name:  # the window closed while we asked
            raise ApplicationError(f"execution {state.execution_id} can no longer be retried")
        self._retry_request = request
        self._recorder.resumed(request)
        return state

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

    async def _wait_for_manual_retry(self, stage: Stage) -> StageRetryRequest | None:
        """A failed execution stays open (PipelineStatus Failed) for its retry window."""
        assert self._pipeline is not None
        window = self._pipeline.conveyor.retry_window_minutes
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


def _undeclared_overrides(pipeline: Pipeline, input: ExecutionInput, source: str) -> list[str]:
    declared = {v.name for v in pipeline.variables}
    problems = [
        f"{source}: variables: '{name}' is not declared in the pipeline's 'variables'; declare it or drop the override"
        for name in input.variables
        if name not in declared
    ]
    sources = {a.name: a for a in pipeline.stages[0].actions if a.action_type_id.category.value == "Source"}
    for r in input.source_revisions:
        action = sources.get(r.action_name)
        if action is None:
            problems.append(f"{source}: sourceRevisions: '{r.action_name}' is not a Source action of the pipeline")
            continue
        registered = PROVIDERS.get(action.action_type_id.provider)
        accepted = registered.for_category(action.action_type_id.category).revision_types if registered else ()
        # COMMIT_ID is also the untyped default (`--source-revision ACTION=VALUE`): the source's own type.
        if accepted and r.revision_type not in (*accepted, RevisionType.COMMIT_ID):
            problems.append(
                f"{source}: sourceRevisions: '{r.action_name}' ({action.action_type_id.provider}) takes a "
                f"revisionType of {' or '.join(accepted)}, not '{r.revision_type}'"
            )
    return problems


def _pipeline_sinks(pipeline: Pipeline) -> list[SinkConfig]:
    return list(pipeline.conveyor.events.sinks) if pipeline.conveyor.events else []


def _result_carried_by(err: ChildWorkflowError) -> StageResult | None:
    """The stage's result, carried in the details of the failure it ended with (if it got that far)."""
    cause: Any = err.cause
    details = getattr(cause, "details", None) or ()
    if details:
        try:
            return StageResult.model_validate(details[0])
        except Exception:  # noqa: BLE001 - fall through to a generic failure
            pass
    return None


def _failure_message(err: ChildWorkflowError) -> str:
    return getattr(err.cause, "message", None) or str(err)


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
