"""Bake time: after an action (or a wave) succeeded, a durable wait watching CloudWatch alarms.

The alarm check is the CloudWatchAlarm rule's activity (Activity.CHECK_ALARMS); between checks a durable timer of
the worker's CONVEYOR_ALARM_POLL_SECONDS (returned with each answer). The deadline is fixed in the bake's state when
it begins, so a restarted worker or server continues the same bake and ends it at the same time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from conveyor.alarms import AlarmAnswer, AlarmCheck
    from conveyor.aws.identity import AwsIdentity
    from conveyor.bake import bake_verdict, next_wait
    from conveyor.interface import Activity
    from conveyor.model import BakeState, BakeStatus, ErrorDetails
    from conveyor.spec.declaration import BakeExtension

CHECK_TIMEOUT = timedelta(seconds=60)
CHECK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=10
)


async def bake(
    declared: BakeExtension,
    identity: AwsIdentity,
    who: str,
    state: BakeState,
    stopped: Callable[[], bool],
) -> ErrorDetails | None:
    """Watch the alarms until the bake's deadline: None when it passed, else why it failed (an alarm in a watched
    state, a missing alarm). `stopped`: a stop of the execution ends the wait early (the bake then passes nothing)."""
    check = AlarmCheck(alarm_names=declared.alarms, states=declared.alarm_states, identity=identity, who=who)
    while True:
        answer: AlarmAnswer = await workflow.execute_activity(
            Activity.CHECK_ALARMS,
            check,
            result_type=AlarmAnswer,
            start_to_close_timeout=CHECK_TIMEOUT,
            retry_policy=CHECK_RETRY,
            summary=f"bake of {who}",
        )
        state.checked_at = workflow.now()
        failure = bake_verdict(answer)
        if failure is not None:
            state.status, state.tripped, state.finished_at = BakeStatus.FAILED, failure.message, workflow.now()
            return failure
        wait = next_wait(state.deadline, workflow.now(), answer.next_check_seconds)
        if wait is None:
            state.status, state.finished_at = BakeStatus.PASSED, workflow.now()
            return None
        try:
            await workflow.wait_condition(stopped, timeout=wait)
        except TimeoutError:
            continue
        state.finished_at = workflow.now()
        return ErrorDetails(code="Stopped", message="the execution was stopped during the bake")
