"""The CodeBuild provider's activity: one activity type, `codebuild`, that hands the action to its runner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities.codebuild.aws import AwsRunner
from activities.codebuild.local import LocalRunner
from conveyor.model import ActionOutcome
from conveyor.providers.codebuild import ACTIVITY, CodeBuildInput, CodeBuildRunner
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactStore


class CodeBuildProvider:
    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.local = LocalRunner(settings, store)
        self.aws = AwsRunner(settings, store)

    @activity.defn(name=ACTIVITY)
    async def codebuild(self, input: CodeBuildInput) -> ActionOutcome:
        if input.runner == CodeBuildRunner.AWS:
            return await self.aws.run(input)
        return await self.local.run(input)


def activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """What the worker registers for the CodeBuild contract (conveyor.providers.codebuild)."""
    return [CodeBuildProvider(settings, store).codebuild]
