"""Which AWS identity an action uses, as data: the role to assume, the region, the STS session name.

Pure and sandbox-safe: contracts build an `AwsIdentity` into an activity's input, and the activity (which
holds the worker's settings) picks the role with `role_for`. Only role ARNs and a region ever cross Temporal:
credentials are obtained and kept inside the worker process (activities/aws/session.py).
"""

from __future__ import annotations

import hashlib
import re

from conveyor.model import ActionContext, CamelModel

# STS's RoleSessionName: 2 to 64 characters of [\w+=,.@-] (\w in AWS's sense: ASCII letters, digits, _).
SESSION_NAME_LIMIT = 64
_SESSION_CHAR = re.compile(r"[^A-Za-z0-9_+=,.@-]")
_PREFIX = "conveyor"
_PIPELINE_KEEP = 15  # shortened names: conveyor-<15 of the pipeline>-<28 of the execution>-<10 hex>
_EXECUTION_KEEP = 28
_HASH_KEEP = 10


class AwsIdentity(CamelModel):
    """Who an action's AWS calls run as: role ARNs and a region only, never credentials."""

    role_arn: str | None = None  # the action's `roleArn`: always assumed
    pipeline_role_arn: str | None = None  # the pipeline's `roleArn`: assumed when the worker is configured for AWS
    region: str | None = None  # the action's `region`; None: the worker's (AWS_REGION / AWS_DEFAULT_REGION)
    session_name: str  # STS RoleSessionName: names the execution in CloudTrail

    def role_for(self, aws: bool) -> str | None:
        """The role to assume: the action's, else (when the worker is configured for AWS) the pipeline's;
        None: the worker's own credentials (boto3's standard chain)."""
        return self.role_arn or (self.pipeline_role_arn if aws else None)


def session_name(pipeline: str, execution_id: str) -> str:
    """`conveyor-<pipeline>-<execution>`, as STS allows it. Characters outside `[\\w+=,.@-]` become `-`; a name
    that is longer than 64 characters or had characters replaced becomes `conveyor-<first 15 of the pipeline>-
    <first 28 of the execution id>-<10 hex of the SHA-256 of the full name>`, so two executions never share one."""
    raw = f"{_PREFIX}-{pipeline}-{execution_id}"
    clean = _SESSION_CHAR.sub("-", raw)
    if clean == raw and len(raw) <= SESSION_NAME_LIMIT:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:_HASH_KEEP]
    pipeline_part = _SESSION_CHAR.sub("-", pipeline)[:_PIPELINE_KEEP]
    execution_part = _SESSION_CHAR.sub("-", execution_id)[:_EXECUTION_KEEP]
    return f"{_PREFIX}-{pipeline_part}-{execution_part}-{digest}"


def action_identity(
    context: ActionContext, role_arn: str | None, pipeline_role_arn: str | None, region: str | None
) -> AwsIdentity:
    return AwsIdentity(
        role_arn=role_arn or None,
        pipeline_role_arn=pipeline_role_arn or None,
        region=region or None,
        session_name=session_name(context.pipeline_name, context.execution_id),
    )
