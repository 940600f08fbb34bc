"""The S3 providers: a Source (a zip object of a versioned bucket) and a Deploy (an artifact into a bucket).

CodePipeline names both "S3"; the registry's entry is the Source contract, with the Deploy contract as its variant
for the Deploy category.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

from conveyor.aws.identity import AwsIdentity
from conveyor.interface import ActionCategory, ActionOwner, RevisionType
from conveyor.model import ActionContext, ArtifactRef, CamelModel
from conveyor.providers.contract import (
    ActionRequest,
    ArtifactLimits,
    ConfigurationKey,
    KeyType,
    ProviderActivity,
    ProviderContract,
    SourcePoll,
)

SOURCE_ACTIVITY = "s3_source"
DEPLOY_ACTIVITY = "s3_deploy"
MODULE = "activities.providers.s3"
# Failures worth a declared retry: throttling, S3's 5xx, a connection that dropped.
AWS_TRANSIENT = frozenset({"AwsUnavailable"})
CANNED_ACLS = (
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
)
# `{uuid}` in a deploy's ObjectKey: derived from the action attempt, so a retried activity writes the same key.
_KEY_NAMESPACE = uuid.UUID("0b7f9a52-5a3e-4b57-9d7e-6c1f8f3e2a41")


class S3SourceInput(CamelModel):
    context: ActionContext
    identity: AwsIdentity
    bucket: str
    key: str
    version_id: str | None = None  # a source revision override; None: the latest version
    output_artifact: str | None = None


class S3DeployInput(CamelModel):
    context: ActionContext
    identity: AwsIdentity
    bucket: str
    extract: bool
    object_key: str | None = None  # the key (Extract false) or the prefix (Extract true); may hold placeholders
    kms_key_arn: str | None = None
    canned_acl: str | None = None
    cache_control: str | None = None
    artifact: ArtifactRef


def build_source_input(request: ActionRequest) -> S3SourceInput:
    configuration = request.configuration
    key, version = configuration["S3ObjectKey"], request.revision_override
    if request.revision_type == RevisionType.S3_OBJECT_KEY and version is not None:
        key, version = version, None  # another object of the bucket, at its latest version
    outputs = request.action.output_artifacts
    return S3SourceInput(
        context=request.context,
        identity=request.aws_identity(),
        bucket=configuration["S3Bucket"],
        key=key,
        version_id=version,
        output_artifact=outputs[0].name if outputs else None,
    )


def build_deploy_input(request: ActionRequest) -> S3DeployInput:
    configuration = request.configuration
    return S3DeployInput(
        context=request.context,
        identity=request.aws_identity(),
        bucket=configuration["BucketName"],
        extract=configuration["Extract"].lower() == "true",
        object_key=configuration.get("ObjectKey") or None,
        kms_key_arn=configuration.get("KMSEncryptionKeyARN") or None,
        canned_acl=configuration.get("CannedACL") or None,
        cache_control=configuration.get("CacheControl") or None,
        artifact=request.artifact(request.action.input_artifacts[0].name),
    )


def deploy_configuration_problems(configuration: Mapping[str, str]) -> list[tuple[str, str]]:
    """What the keys' types cannot say: ObjectKey is required without Extract; CannedACL is one of S3's."""
    problems: list[tuple[str, str]] = []
    extract = configuration.get("Extract", "")
    if extract.lower() == "false" and not configuration.get("ObjectKey"):
        problems.append(("ObjectKey", "is required when Extract is false: the key the artifact's zip is written to"))
    acl = configuration.get("CannedACL")
    if acl and "#{" not in acl and acl not in CANNED_ACLS:
        problems.append(("CannedACL", f"'{acl}' is not a canned ACL; use one of {', '.join(CANNED_ACLS)}"))
    return problems


def expand_object_key(template: str, scheduled: datetime, context: ActionContext) -> str:
    """CodePipeline's `{datetime}` (`2019-01-10_07-39-57`, UTC) and `{uuid}` placeholders. Both derive from the
    activity (its first scheduling time, the action attempt), never from the clock of the attempt that runs."""
    stamp = scheduled.strftime("%Y-%m-%d_%H-%M-%S")
    generated = uuid.uuid5(_KEY_NAMESPACE, f"{context.idempotency_key}/{context.action_attempt}")
    return template.replace("{datetime}", stamp).replace("{uuid}", str(generated))


S3_DEPLOY = ProviderContract(
    name="S3",
    summary=(
        "writes its input artifact to `BucketName`: each file under the `ObjectKey` prefix (`Extract` true, content "
        "types guessed) or the zip as `ObjectKey` (`Extract` false; `{datetime}` and `{uuid}` placeholders, stable "
        "across retries of an attempt); `KMSEncryptionKeyARN`, `CannedACL`, `CacheControl` apply to every object"
    ),
    categories=(ActionCategory.DEPLOY,),
    default_category=ActionCategory.DEPLOY,
    owner=ActionOwner.AWS,
    configuration=(
        ConfigurationKey("BucketName", required=True),
        ConfigurationKey("Extract", required=True, type=KeyType.BOOLEAN),
        ConfigurationKey("ObjectKey"),
        ConfigurationKey("KMSEncryptionKeyARN"),
        ConfigurationKey("CannedACL"),
        ConfigurationKey("CacheControl"),
    ),
    configuration_check=deploy_configuration_problems,
    artifacts=ArtifactLimits(min_inputs=1, max_inputs=1, max_outputs=0),
    default_timeout=timedelta(minutes=20),
    transient_errors=AWS_TRANSIENT,
    activity=ProviderActivity(
        name=DEPLOY_ACTIVITY, input_type=S3DeployInput, build_input=build_deploy_input, module=MODULE
    ),
)

S3 = ProviderContract(
    name="S3",
    summary=(
        "downloads the zip `S3ObjectKey` of the versioned bucket `S3Bucket` (its latest version, or the "
        "execution's S3_OBJECT_VERSION_ID override) as its artifact; outputs {variables}; recorded as the "
        "execution's source revision (the version id); polled by object version unless `PollForSourceChanges` is "
        "false"
    ),
    categories=(ActionCategory.SOURCE, ActionCategory.DEPLOY),
    default_category=ActionCategory.SOURCE,
    owner=ActionOwner.AWS,
    configuration=(
        ConfigurationKey("S3Bucket", required=True),
        ConfigurationKey("S3ObjectKey", required=True),
        ConfigurationKey("PollForSourceChanges", type=KeyType.BOOLEAN),
    ),
    fixed_outputs=("ETag", "VersionId"),
    artifacts=ArtifactLimits(max_inputs=0, max_outputs=1),
    default_timeout=timedelta(minutes=20),
    transient_errors=AWS_TRANSIENT,
    revision_types=(RevisionType.S3_OBJECT_VERSION_ID, RevisionType.S3_OBJECT_KEY),
    poll=SourcePoll(revision_type=RevisionType.S3_OBJECT_VERSION_ID),
    activity=ProviderActivity(
        name=SOURCE_ACTIVITY, input_type=S3SourceInput, build_input=build_source_input, module=MODULE
    ),
    variants=(S3_DEPLOY,),
)
