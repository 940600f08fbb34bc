"""An action's log, followed live for the console: the lines the workers write to the store (local or S3, so the
console may run on any host that sees the store), as they arrive, until the action has ended and its log is read to
the end. The same reader and end test as `conveyor logs --follow` (conveyor/log_follow.py)."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.log_follow import FOLLOW_INTERVAL, follow_log, log_finished, log_owner
from conveyor.stores.logs import ActionLogName, action_log_reader


async def follow_action_log(
    client: ConveyorClient, ref: ExecutionRef, stage: str, action: str, *, interval: float = FOLLOW_INTERVAL
) -> AsyncIterator[list[str]]:
    """Batches of new complete lines (without their line ends) of the log of `stage`/`action` (or its compensation,
    `<Action>.rollback`), in order, each line once; a last line with no line end comes when the log is complete.
    Ends when the action has ended (or the execution has) and the log is read. Undecodable bytes become U+FFFD;
    a character split between two store chunks is joined first. Raises ConveyorError when the execution, stage or
    action does not exist, and the store's ArtifactError/StoreUnavailableError when the log cannot be read."""
    reader = action_log_reader(client.settings, ActionLogName(ref.pipeline_name, ref.execution_id, stage, action))

    async def finished() -> bool:
        state, found = await client.action_state(ref, stage, log_owner(action))
        return log_finished(state, found, action)

    await finished()  # a missing stage or action is named now, not after the first wait
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    partial = ""
    async for chunk in follow_log(reader, finished, interval=interval):
        text = partial + decoder.decode(chunk)
        *lines, partial = text.split("\n")
        if lines:
            yield [line.removesuffix("\r") for line in lines]
    partial += decoder.decode(b"", final=True)
    if partial:
        yield [partial]
