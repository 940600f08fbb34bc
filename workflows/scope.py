"""The variables and artifacts of one execution: what its stages produced so far, and what each stage is given.

Deterministic and I/O-free: it lives in the execution workflow's state and is rebuilt on replay.
"""

from __future__ import annotations

from conveyor.model import ArtifactRef, RollbackSpec, StageResult
from conveyor.spec.declaration import Stage
from conveyor.variables import PIPELINE_VARIABLES, RESERVED, namespaces_used


class ExecutionScope:
    def __init__(self, pipeline_name: str, execution_id: str, variables: dict[str, str]) -> None:
        # namespace -> name -> value: the pipeline's variables, the reserved ones, then each action's outputs.
        self.values: dict[str, dict[str, str]] = {
            PIPELINE_VARIABLES: dict(variables),
            RESERVED: {"PipelineExecutionId": execution_id, "PipelineName": pipeline_name},
        }
        self.artifacts: dict[str, ArtifactRef] = {}  # artifact name -> its stored reference

    def adopt_rollback(self, rollback: RollbackSpec) -> None:
        """A ROLLBACK execution starts from the inputs an earlier execution gave the stage it re-runs."""
        self.values.update(rollback.variables)
        self.artifacts.update({ref.name: ref for ref in rollback.artifacts})

    def absorb(self, result: StageResult) -> None:
        """A stage's output variables and artifacts, for the stages after it."""
        for namespace, outputs in result.output_variables.items():
            self.values[namespace] = outputs
        for ref in result.output_artifacts:
            self.artifacts[ref.name] = ref

    def variables_for(self, stage: Stage) -> dict[str, dict[str, str]]:
        """Only the namespaces the stage references: keeps its input (and history) small."""
        used = namespaces_used(_stage_texts(stage))
        return {ns: self.values[ns] for ns in sorted(used) if ns in self.values}

    def artifacts_for(self, stage: Stage) -> list[ArtifactRef]:
        names = {i.name for a in stage.actions for i in a.input_artifacts}
        return [self.artifacts[name] for name in sorted(names) if name in self.artifacts]

    def digests(self) -> dict[str, str]:
        """Every artifact so far, by name: what an approval shows."""
        return {name: ref.digest for name, ref in sorted(self.artifacts.items())}


def _stage_texts(stage: Stage) -> list[str]:
    texts: list[str] = []
    for action in stage.actions:
        texts += list(action.configuration.values()) + list(action.commands or [])
        texts += [e.value for e in action.environment_variables] + list(action.conveyor.rollback)
        texts += [value for wave in action.conveyor.waves or [] for value in wave.configuration.values()]
    return texts
