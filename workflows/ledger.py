"""What a stage's actions have to work with and what they produced: the variables and artifacts an action reads,
the outputs and source revisions the stage returns, and the compensation steps that undo what its actions did.

Pure: no workflow calls, table-tested without a server (tests/test_action_rules.py). Held by the stage, written by
its `ActionRunner` (workflows/action.py) and by a FAILED_ACTIONS retry's carry-over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from conveyor.model import ActionOutcome, ActionState, ArtifactRef, CompensationStep, SourceRevision
    from conveyor.providers.contract import ActionRequest, ProviderContract
    from conveyor.spec.declaration import Action
    from conveyor.variables import UnresolvedVariableError, resolve
    from workflows.failures import ActionFailed


@dataclass
class StageLedger:
    values: dict[str, dict[str, str]]  # namespace -> key -> value: the stage's input variables and its outputs
    artifacts: dict[str, ArtifactRef]  # by name: the stage's input artifacts and those its actions produced
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # only this stage's actions' variables
    produced: list[ArtifactRef] = field(default_factory=list)
    revisions: list[SourceRevision] = field(default_factory=list)
    compensations: list[CompensationStep] = field(default_factory=list)

    def resolve(self, text: str) -> str:
        """`text` with its `#{namespace.key}` variables resolved; an unknown one fails the action."""
        try:
            return resolve(text, self.values)
        except UnresolvedVariableError as err:
            raise ActionFailed("VariableError", str(err)) from None

    def artifact(self, action: Action, name: str) -> ArtifactRef:
        ref = self.artifacts.get(name)
        if ref is None:
            raise ActionFailed("ArtifactError", f"input artifact '{name}' of action '{action.name}' is not available")
        return ref

    def record(self, action: Action, outcome: ActionOutcome) -> None:
        """A succeeded action's outputs, for the actions after it and the stage's result."""
        if action.namespace:
            self.values[action.namespace] = outcome.output_variables
            self.outputs[action.namespace] = outcome.output_variables
        for ref in outcome.output_artifacts:
            self.artifacts[ref.name] = ref
            self.produced.append(ref)
        if outcome.source_revision is not None:
            self.revisions.append(outcome.source_revision)

    def carry(self, before: ActionState, namespace: str | None) -> None:
        """What an action that succeeded in the attempt before produced (a FAILED_ACTIONS retry keeps it)."""
        if namespace:
            self.values[namespace] = before.output_variables
            self.outputs[namespace] = before.output_variables
        for ref in before.output_artifacts:
            self.artifacts[ref.name] = ref
            self.produced.append(ref)

    def register_compensation(
        self,
        contract: ProviderContract,
        request: ActionRequest,
        activity_input: BaseModel,
        owner: str,
        wave: str | None,
    ) -> None:
        """Registered before the action (or each of its waves) runs: a half-applied action is undone too. Once per
        action and wave: a retried attempt keeps the first attempt's step (the state before anything changed)."""
        compensation = contract.compensation
        if compensation is None or (owner, wave) in {(c.action_name, c.wave) for c in self.compensations}:
            return
        step = compensation.register(request, activity_input, len(self.compensations) + 1)
        if step is not None:
            step.action_name, step.wave = owner, wave  # the stage's action, whose state shows the undo
            self.compensations.append(step)

    def keep_for_compensation(
        self, action_name: str, refs: list[ArtifactRef], state: ActionState, wave: str | None = None
    ) -> None:
        """What the action saved for its compensation (a stack's previous template), whether it succeeded or failed,
        joins its registered step (the first attempt's first: the state before the action changed anything) and its
        state (garbage collection keeps it)."""
        step = next((c for c in self.compensations if c.action_name == action_name and c.wave == wave), None)
        kept = {ref.digest for ref in state.compensation_artifacts}
        refs = [ref for ref in refs if ref.digest not in kept]
        if step is not None and refs:
            step.input_artifacts = [*step.input_artifacts, *refs]
            state.compensation_artifacts = [*state.compensation_artifacts, *refs]
