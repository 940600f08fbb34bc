"""Which declared S3 artifact store an action's outputs go to (pure: the workflows call it, deterministically).

A declaration names its store as CodePipeline does: `artifactStore` (one, `type: S3`, `location` = the bucket, optional
`encryptionKey` of type KMS) or `artifactStores` (one per region). The workflows carry the candidates to each action;
a worker applies them only when configured for AWS (CONVEYOR_AWS), so an imported declaration still runs offline on
the worker's own store.
"""

from __future__ import annotations

from conveyor.model import ArtifactLocation
from conveyor.spec.declaration import ArtifactStore, Pipeline


def declared_locations(pipeline: Pipeline) -> list[ArtifactLocation]:
    """The pipeline's S3 artifact stores: `artifactStore`, else every region's entry of `artifactStores`."""
    if pipeline.artifact_store is not None:
        found = _location(pipeline.artifact_store, None)
        return [found] if found else []
    stores = pipeline.artifact_stores or {}
    return [found for region, store in sorted(stores.items()) if (found := _location(store, region))]


def locations_for_action(declared: list[ArtifactLocation], action_region: str | None) -> list[ArtifactLocation]:
    """The candidates for one action: its region's store when it names a region that has one, else all of them (the
    worker takes the one of its own region; with `artifactStore` there is just one)."""
    if action_region:
        chosen = [location for location in declared if location.region == action_region]
        if chosen:
            return chosen
    return declared


def _location(store: ArtifactStore, region: str | None) -> ArtifactLocation | None:
    if store.type.upper() != "S3" or not store.location.strip():
        return None
    bucket, _, prefix = store.location.strip().removeprefix("s3://").partition("/")
    key = store.encryption_key or {}
    kms_key = key.get("id") if str(key.get("type", "KMS")).upper() == "KMS" else None
    return ArtifactLocation(
        bucket=bucket, prefix=prefix.strip("/"), kms_key=str(kms_key) if kms_key else None, region=region
    )
