"""The Manual approval provider: the one declared special case, a durable wait for a decision (the stage's
`approve` / `reject` updates and signals), not an activity."""

from __future__ import annotations

from datetime import timedelta

from conveyor.interface import ActionCategory, ActionOwner
from conveyor.providers.contract import ArtifactLimits, ConfigurationKey, ProviderContract

MANUAL = ProviderContract(
    name="Manual",
    summary="waits for an approval (below); `CustomData`, `ExternalEntityLink` (variables resolved), `NotificationArn`",
    categories=(ActionCategory.APPROVAL,),
    default_category=ActionCategory.APPROVAL,
    owner=ActionOwner.AWS,
    configuration=(
        ConfigurationKey("NotificationArn"),
        ConfigurationKey("CustomData"),
        ConfigurationKey("ExternalEntityLink"),
    ),
    artifacts=ArtifactLimits(max_inputs=0, max_outputs=0),
    default_timeout=timedelta(days=7),
    waits_for_approval=True,
)
