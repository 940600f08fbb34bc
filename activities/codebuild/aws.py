"""The `aws` CodeBuild runner (being built in issue 15)."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from conveyor.model import ActionOutcome
from conveyor.providers.codebuild import CodeBuildInput
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactStore


class AwsRunner:
    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store

    async def run(self, input: CodeBuildInput) -> ActionOutcome:
        raise ApplicationError(
            "the aws CodeBuild runner is not built yet", type="ConfigurationError", non_retryable=True
        )
