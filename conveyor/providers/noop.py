"""The Noop provider: does nothing and succeeds, exporting its configuration as output variables."""

from __future__ import annotations

from datetime import timedelta

from conveyor.interface import ActionCategory, ActionOwner
from conveyor.model import NoopInput
from conveyor.providers.contract import ActionRequest, OutputVariables, ProviderActivity, ProviderContract

ACTIVITY = "noop"


def build_input(request: ActionRequest) -> NoopInput:
    return NoopInput(context=request.context, output_variables=request.configuration)


NOOP = ProviderContract(
    name="Noop",
    summary=(
        "does nothing and exports its configuration as output variables: the same work as an empty activity, "
        "used by the benchmarks"
    ),
    categories=tuple(ActionCategory),
    default_category=ActionCategory.BUILD,
    owner=ActionOwner.CUSTOM,
    configuration=None,
    output_variables=OutputVariables.CONFIGURATION,
    default_timeout=timedelta(hours=1),
    activity=ProviderActivity(
        name=ACTIVITY, input_type=NoopInput, build_input=build_input, module="activities.providers.noop"
    ),
)
