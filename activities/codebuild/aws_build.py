"""What the `aws` CodeBuild runner sends to CodeBuild and reads back from it: pure functions, no calls.

- One action attempt is one build: the StartBuild idempotency token and the marker environment variable
  (`CONVEYOR_ACTION_ATTEMPT`) are both derived from the action's idempotency key and its attempt, so a retried activity
  recognises the build an earlier (crashed) activity started.
- Inputs are S3 source overrides (`bucket/key` of each artifact's zip), the primary first; outputs are S3 artifact
  overrides under one prefix per action attempt, the zip of output artifact `Name` at `<path>/<Name>`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.model import ActionContext, BuildPhase
from conveyor.providers.codebuild import CodeBuildInput
from conveyor.text import shorten

if TYPE_CHECKING:
    from mypy_boto3_codebuild.type_defs import (
        BuildTypeDef,
        EnvironmentVariableTypeDef,
        ProjectArtifactsTypeDef,
        ProjectSourceTypeDef,
        StartBuildInputTypeDef,
    )

MARKER_VARIABLE = "CONVEYOR_ACTION_ATTEMPT"
IN_PROGRESS = "IN_PROGRESS"
SUCCEEDED = "SUCCEEDED"
# CodeBuild accepts a build timeout of 5 minutes to 36 hours.
MIN_TIMEOUT_MINUTES = 5
MAX_TIMEOUT_MINUTES = 2160
_NOT_FAILED = {IN_PROGRESS, SUCCEEDED, "", None}


@dataclass(frozen=True)
class S3Prefix:
    """Where the build writes the action's output artifacts."""

    bucket: str
    path: str  # a key prefix, no trailing slash

    def key(self, artifact: str) -> str:
        return f"{self.path}/{artifact}"


def attempt_marker(context: ActionContext) -> str:
    """The marker variable's value, readable: `<execution>/<stage>/<stage attempt>/<action>/<action attempt>`."""
    return f"{context.idempotency_key}/{context.action_attempt}"


def idempotency_token(context: ActionContext) -> str:
    """StartBuild's idempotencyToken (at most 64 characters): a hash of the action attempt."""
    return hashlib.sha256(attempt_marker(context).encode()).hexdigest()


def timeout_minutes(seconds: int) -> int:
    return min(MAX_TIMEOUT_MINUTES, max(MIN_TIMEOUT_MINUTES, math.ceil(seconds / 60)))


def outputs_prefix(bucket: str, store_prefix: str, context: ActionContext) -> S3Prefix:
    relative = f"codebuild/{idempotency_token(context)}"
    return S3Prefix(bucket, f"{store_prefix}/{relative}" if store_prefix else relative)


def start_build_request(input: CodeBuildInput, sources: list[str], outputs: S3Prefix) -> StartBuildInputTypeDef:
    """StartBuild's request: `sources` are the inputs' `bucket/key`, in the order of input.input_artifacts."""
    variables: list[EnvironmentVariableTypeDef] = [
        {"name": v.name, "value": v.value, "type": v.type.value} for v in input.environment_variables
    ]
    variables.append({"name": MARKER_VARIABLE, "value": attempt_marker(input.context), "type": "PLAINTEXT"})
    request: StartBuildInputTypeDef = {
        "projectName": input.project_name,
        "idempotencyToken": idempotency_token(input.context),
        "environmentVariablesOverride": variables,
        "timeoutInMinutesOverride": timeout_minutes(input.timeout_seconds),
    }
    if sources:
        request["sourceTypeOverride"] = "S3"
        request["sourceLocationOverride"] = sources[0]
    secondary: list[ProjectSourceTypeDef] = [
        {"type": "S3", "location": location, "sourceIdentifier": ref.name}
        for ref, location in zip(input.input_artifacts[1:], sources[1:], strict=True)
    ]
    if secondary:
        request["secondarySourcesOverride"] = secondary
    artifacts = [_artifact(name, outputs) for name in input.output_artifacts]
    request["artifactsOverride"] = artifacts[0] if artifacts else {"type": "NO_ARTIFACTS"}
    if len(artifacts) > 1:
        request["secondaryArtifactsOverride"] = artifacts[1:]
    return request


def _artifact(name: str, outputs: S3Prefix) -> ProjectArtifactsTypeDef:
    return {
        "type": "S3",
        "location": outputs.bucket,
        "path": outputs.path,
        "name": name,
        "namespaceType": "NONE",
        "packaging": "ZIP",
        "overrideArtifactName": False,
        "artifactIdentifier": name,
    }


def started_by(build: BuildTypeDef, marker: str) -> bool:
    """Whether `build` carries this action attempt's marker variable."""
    variables = build.get("environment", {}).get("environmentVariables", [])
    return any(v.get("name") == MARKER_VARIABLE and v.get("value") == marker for v in variables)


def build_phases(build: BuildTypeDef) -> list[BuildPhase]:
    return [
        BuildPhase(
            name=phase.get("phaseType", "UNKNOWN"),
            status=phase.get("phaseStatus"),
            started_at=phase.get("startTime"),
            finished_at=phase.get("endTime"),
        )
        for phase in build.get("phases", [])
    ]


def finished(build: BuildTypeDef) -> bool:
    return bool(build.get("buildComplete")) or build.get("buildStatus", IN_PROGRESS) != IN_PROGRESS


def exported_variables(build: BuildTypeDef) -> dict[str, str]:
    return {v["name"]: v.get("value", "") for v in build.get("exportedEnvironmentVariables", []) if "name" in v}


def failure_message(build: BuildTypeDef) -> str:
    """`build <id> FAILED in phase BUILD: <CodeBuild's context message>`: the first phase that did not succeed."""
    status = build.get("buildStatus", "FAILED")
    failed = next(
        (p for p in build.get("phases", []) if p.get("phaseStatus") not in _NOT_FAILED),
        None,
    )
    if failed is None:
        return f"build {build.get('id')} {status} in phase {build.get('currentPhase', 'UNKNOWN')}"
    contexts = [
        ": ".join(part for part in (c.get("statusCode"), c.get("message")) if part) for c in failed.get("contexts", [])
    ]
    detail = "; ".join(c for c in contexts if c)
    text = f"build {build.get('id')} {status} in phase {failed.get('phaseType')}"
    return text + (f": {shorten(detail, 500)}" if detail else "")
