"""The CloudWatch alarm check: one DescribeAlarms for a watcher (the CloudWatchAlarm rule), which waits between checks
on durable timers in the workflow. Answers with the alarms in the watched states, the missing ones, and when to look
again (the worker's CONVEYOR_ALARM_POLL_SECONDS, recorded in history with the answer)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from temporalio import activity

from activities.aws.session import AwsSessions, aws_errors
from conveyor.alarms import AlarmAnswer, AlarmCheck, AlarmState
from conveyor.interface import Activity
from conveyor.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient


class AlarmActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions = AwsSessions(settings)

    @activity.defn(name=Activity.CHECK_ALARMS)
    async def check_alarms(self, check: AlarmCheck) -> AlarmAnswer:
        return await asyncio.to_thread(self._check, check)

    def _check(self, check: AlarmCheck) -> AlarmAnswer:
        client: CloudWatchClient = self.sessions.client(check.identity, "cloudwatch", check.who)
        states: dict[str, str] = {}
        with aws_errors(check.who, "cloudwatch:DescribeAlarms", self.sessions.role(check.identity)):
            for page in client.get_paginator("describe_alarms").paginate(
                AlarmNames=check.alarm_names, AlarmTypes=["MetricAlarm", "CompositeAlarm"]
            ):
                for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
                    states[alarm.get("AlarmName", "")] = alarm.get("StateValue", "")
        watched = {state.value for state in check.states}
        return AlarmAnswer(
            tripped={name: AlarmState(states[name]) for name in check.alarm_names if states.get(name) in watched},
            missing=[name for name in check.alarm_names if name not in states],
            next_check_seconds=self.settings.alarm_poll_seconds,
        )
