"""What every AWS provider's activity does around its calls: a scratch workspace, its action log."""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio import activity

from activities.workspace import action_workspace
from conveyor.model import ActionContext
from conveyor.settings import Settings
from conveyor.stores.logs import ActionLogName, attempt_label, open_action_log

__all__ = ["action_workspace", "write_action_log"]


def write_action_log(settings: Settings, context: ActionContext, lines: list[str]) -> None:
    """Append to the action's log in the worker's configured store (`conveyor logs`, from any host): what was read
    or written where; never credentials."""
    name = ActionLogName(context.pipeline_name, context.execution_id, context.stage_name, context.action_name)
    log = open_action_log(settings, name, attempt_label(context.action_attempt, activity.info().attempt))
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        log.write("".join(f"{stamp} {line}\n" for line in lines))
    finally:
        log.close()
