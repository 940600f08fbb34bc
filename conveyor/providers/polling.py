"""Which source action a pipeline's poll (`conveyor.poll`) reads: pure, shared by the coordinator (whether a
poll schedule exists) and the trigger activity (what it reads)."""

from __future__ import annotations

from conveyor.aws.identity import AwsIdentity, session_name
from conveyor.interface import ActionCategory
from conveyor.providers.contract import PollRequest, ProviderContract
from conveyor.providers.registry import PROVIDERS
from conveyor.spec.declaration import Action, Pipeline
from conveyor.variables import PIPELINE_VARIABLES, resolve

# A source saying `false` to one of these is not polled (CodeStarSourceConnection's DetectChanges also stops
# webhook starts: conveyor/service/app.py).
DETECTION_OFF_KEYS = ("PollForSourceChanges", "DetectChanges")
POLL_SESSION = "poll"  # the STS session name's "execution" part for a poll's reads


def polled_source(pipeline: Pipeline) -> tuple[Action, ProviderContract] | None:
    """The first Source action whose provider can be polled and that does not turn change detection off
    (`PollForSourceChanges: false`, or a CodeStarSourceConnection's `DetectChanges: false`)."""
    for action in pipeline.stages[0].actions:
        type_id = action.action_type_id
        registered = PROVIDERS.get(type_id.provider)
        if type_id.category != ActionCategory.SOURCE or registered is None:
            continue
        contract = registered.for_category(type_id.category)
        if contract.poll is not None and not any(
            action.configuration.get(key, "").lower() == "false" for key in DETECTION_OFF_KEYS
        ):
            return action, contract
    return None


def poll_request(pipeline: Pipeline, action: Action) -> PollRequest:
    """What the poll reads: the action's configuration with pipeline variables at their defaults."""
    defaults = {PIPELINE_VARIABLES: {v.name: v.default_value or "" for v in pipeline.variables}}
    return PollRequest(
        pipeline_name=pipeline.name,
        action_name=action.name,
        configuration={key: resolve(value, defaults) for key, value in action.configuration.items()},
        identity=AwsIdentity(
            role_arn=action.role_arn,
            pipeline_role_arn=pipeline.role_arn,
            region=action.region,
            session_name=session_name(pipeline.name, POLL_SESSION),
        ),
    )
