"""The ECR source provider: an image of a repository, by tag (or the execution's IMAGE_DIGEST override)."""

from __future__ import annotations

from datetime import timedelta

from conveyor.aws.identity import AwsIdentity
from conveyor.interface import ActionCategory, ActionOwner, RevisionType
from conveyor.model import ActionContext, CamelModel
from conveyor.providers.contract import (
    ActionRequest,
    ArtifactLimits,
    ConfigurationKey,
    ProviderActivity,
    ProviderContract,
    SourcePoll,
)

ACTIVITY = "ecr_source"
DEFAULT_TAG = "latest"
IMAGE_DETAIL_FILE = "imageDetail.json"


class EcrSourceInput(CamelModel):
    context: ActionContext
    identity: AwsIdentity
    repository: str
    tag: str = DEFAULT_TAG
    digest: str | None = None  # a source revision override wins over the tag
    output_artifact: str | None = None


def build_input(request: ActionRequest) -> EcrSourceInput:
    outputs = request.action.output_artifacts
    return EcrSourceInput(
        context=request.context,
        identity=request.aws_identity(),
        repository=request.configuration["RepositoryName"],
        tag=request.configuration.get("ImageTag") or DEFAULT_TAG,
        digest=request.revision_override,
        output_artifact=outputs[0].name if outputs else None,
    )


ECR = ProviderContract(
    name="ECR",
    summary=(
        "reads the image `ImageTag` (default latest) of `RepositoryName`, or the execution's IMAGE_DIGEST override; "
        "its artifact holds `imageDetail.json` as CodePipeline writes it; outputs {variables}; recorded as the "
        "execution's source revision (the digest); polled by image digest"
    ),
    categories=(ActionCategory.SOURCE,),
    default_category=ActionCategory.SOURCE,
    owner=ActionOwner.AWS,
    configuration=(ConfigurationKey("RepositoryName", required=True), ConfigurationKey("ImageTag")),
    fixed_outputs=("RegistryId", "RepositoryName", "ImageTag", "ImageDigest", "ImageURI"),
    artifacts=ArtifactLimits(max_inputs=0, max_outputs=1),
    default_timeout=timedelta(minutes=20),
    transient_errors=frozenset({"AwsUnavailable"}),
    revision_types=(RevisionType.IMAGE_DIGEST,),
    poll=SourcePoll(revision_type=RevisionType.IMAGE_DIGEST),
    activity=ProviderActivity(
        name=ACTIVITY, input_type=EcrSourceInput, build_input=build_input, module="activities.providers.ecr"
    ),
)
