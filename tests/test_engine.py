"""The engine against a real Temporal dev server: stages, parallel actions, artifacts, variables."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.interface import Query
from conveyor.model import ActionStatus, ExecutionStatus, StageStatus, Transition, TransitionScope
from conveyor.settings import action_log_path
from tests.helpers import pipeline

MULTI_STAGE = """
name: multi
variables:
  - name: Greeting
    defaultValue: hello
stages:
  - name: Build
    actions:
      - name: Compile
        provider: Commands
        namespace: Build
        commands:
          - 'mkdir -p dist && echo "#{variables.Greeting} #{codepipeline.PipelineExecutionId}" > dist/app.txt'
          - export VERSION=1.2.3
        outputVariables: [VERSION]
        outputArtifacts:
          - name: App
            files: ["dist/**/*"]
      - name: Docs
        provider: Commands
        outputArtifacts: [{name: Docs, files: ["docs.txt"]}]
        commands: ["echo docs > docs.txt"]
  - name: Test
    actions:
      - name: Unit
        provider: Commands
        inputArtifacts: [{name: App}, {name: Docs}]
        environmentVariables:
          - {name: EXPECTED, value: "#{Build.VERSION}"}
        commands:
          - grep -q "#{variables.Greeting}" dist/app.txt
          - test "$EXPECTED" = 1.2.3
          - test "$(cat "$CODEBUILD_SRC_DIR_Docs/docs.txt")" = docs
      - name: Integration
        provider: Commands
        inputArtifacts: [{name: App}]
        commands: ["test -f dist/app.txt"]
"""


async def test_multi_stage_pipeline_flows_artifacts_and_variables(conveyor: ConveyorClient, worker: Worker) -> None:
    declaration = pipeline(MULTI_STAGE)
    ref, started = await conveyor.start(declaration, variables={"Greeting": "bonjour"})
    assert started
    state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert [s.status for s in state.stages] == [StageStatus.SUCCEEDED, StageStatus.SUCCEEDED]
    build = state.stage("Build")
    assert build is not None
    compile_action = build.actions[0]
    assert compile_action.output_variables == {"VERSION": "1.2.3"}
    assert compile_action.output_artifacts[0].name == "App"
    assert compile_action.output_artifacts[0].digest.startswith("sha256:")
    test_stage = state.stage("Test")
    assert test_stage is not None
    assert all(a.status == ActionStatus.SUCCEEDED for a in test_stage.actions)
    assert state.variables == {"Greeting": "bonjour"}
    log = action_log_path(conveyor.settings.logs_dir, ref.pipeline_name, ref.execution_id, "Build", "Compile")
    assert "Running command 1" in log.read_text()


async def test_failed_action_lets_its_group_finish_and_starts_no_later_group(
    conveyor: ConveyorClient, worker: Worker
) -> None:
    declaration = pipeline(
        """
name: failing
conveyor: {retryWindowMinutes: 0}  # no window for `conveyor retry`: the workflow closes at once
stages:
  - name: Build
    actions:
      - {name: Breaks, provider: Commands, commands: ["echo about to fail", "exit 3"]}
      - {name: Slow, provider: Commands, commands: ["sleep 1", "echo done > slow.txt"]}
      - {name: Later, provider: Commands, runOrder: 2, commands: ["echo never"]}
  - name: Deploy
    actions:
      - {name: Ship, provider: Commands, commands: ["echo never"]}
"""
    )
    ref, _ = await conveyor.start(declaration)
    state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.FAILED
    build = state.stage("Build")
    assert build is not None and build.status == StageStatus.FAILED
    breaks, slow, later = build.actions
    assert breaks.status == ActionStatus.FAILED
    assert breaks.error is not None and "exit code 3" in breaks.error.message and "exit 3" in breaks.error.message
    assert slow.status == ActionStatus.SUCCEEDED  # the group finished
    assert later.status is None  # no later group started
    deploy = state.stage("Deploy")
    assert deploy is not None and deploy.status is None
    assert state.status_summary is not None and "stage 'Build' failed" in state.status_summary
    # The workflow itself fails, so the Temporal UI and CLI show the failure too.
    with pytest.raises(WorkflowFailureError):
        await conveyor.temporal.get_workflow_handle(ref.workflow_id).result()


async def test_invalid_declaration_sent_to_temporal_fails_with_validation_messages(
    conveyor: ConveyorClient, worker: Worker
) -> None:
    bad = {
        "name": "broken",
        "stages": [
            {
                "name": "Build",
                "actions": [
                    {"name": "A", "provider": "Commands", "commands": ["true"], "inputArtifacts": [{"name": "Nope"}]}
                ],
            }
        ],
    }
    ref, _ = await conveyor.start(bad, source_name="broken.json")
    state = await asyncio.wait_for(conveyor.wait(ref), 30)
    assert state.status == ExecutionStatus.FAILED
    assert state.status_summary is not None
    assert (
        "broken.json: stages[0].actions[0].inputArtifacts[0]: artifact 'Nope' is not produced by an earlier action"
        in state.status_summary
    )


async def test_client_request_token_makes_start_idempotent(conveyor: ConveyorClient, worker: Worker) -> None:
    declaration = pipeline(
        """
name: tokens
stages:
  - name: Build
    actions:
      - {name: A, provider: Commands, commands: ["true"]}
"""
    )
    first, started = await conveyor.start(declaration, token="release-42")
    assert started
    await asyncio.wait_for(conveyor.wait(first), 30)
    again, started_again = await conveyor.start(declaration, token="release-42")
    assert again == first and not started_again  # finished, still the same execution
    other, _ = await conveyor.start(declaration, token="release-43")
    assert other != first
    listed = await conveyor.list(first.pipeline_name)
    assert {s.ref for s in listed} <= {first, other}


async def test_undeclared_variable_override_is_refused(conveyor: ConveyorClient, worker: Worker) -> None:
    declaration = pipeline(
        """
name: overrides
stages:
  - name: Build
    actions:
      - {name: A, provider: Commands, commands: ["true"]}
"""
    )
    ref, _ = await conveyor.start(declaration, variables={"Nope": "1"}, source_name="p.yaml")
    state = await asyncio.wait_for(conveyor.wait(ref), 30)
    assert state.status == ExecutionStatus.FAILED
    assert "p.yaml: variables: 'Nope' is not declared" in (state.status_summary or "")


def test_execution_ref_parsing() -> None:
    assert ExecutionRef.parse("demo/abc") == ExecutionRef("demo", "abc")
    with pytest.raises(Exception, match="PIPELINE/EXECUTION-ID"):
        ExecutionRef.parse("abc")


TWO_STAGES = """
name: transitions
stages:
  - name: Build
    actions: [{name: Compile, provider: Commands, commands: ["true"]}]
  - name: Deploy
    actions: [{name: Ship, provider: Commands, commands: ["true"]}]
"""


async def test_transitions_follow_codepipelines_state_machine(conveyor: ConveyorClient, worker: Worker) -> None:
    ref, _ = await conveyor.start(pipeline(TWO_STAGES))
    state = await asyncio.wait_for(conveyor.wait(ref), 30)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    handle = conveyor.temporal.get_workflow_handle(ref.workflow_id)
    transitions = await handle.query(Query.TRANSITIONS, result_type=list[Transition])
    pipeline_, stage, action = TransitionScope.PIPELINE, TransitionScope.STAGE, TransitionScope.ACTION
    assert [(t.scope, t.stage_name, t.action_name, t.from_status, t.to_status) for t in transitions] == [
        (pipeline_, None, None, None, ExecutionStatus.IN_PROGRESS),
        (stage, "Build", None, None, StageStatus.IN_PROGRESS),
        (action, "Build", "Compile", None, ActionStatus.IN_PROGRESS),
        (action, "Build", "Compile", ActionStatus.IN_PROGRESS, ActionStatus.SUCCEEDED),
        (stage, "Build", None, StageStatus.IN_PROGRESS, StageStatus.SUCCEEDED),
        (stage, "Deploy", None, None, StageStatus.IN_PROGRESS),
        (action, "Deploy", "Ship", None, ActionStatus.IN_PROGRESS),
        (action, "Deploy", "Ship", ActionStatus.IN_PROGRESS, ActionStatus.SUCCEEDED),
        (stage, "Deploy", None, StageStatus.IN_PROGRESS, StageStatus.SUCCEEDED),
        (pipeline_, None, None, ExecutionStatus.IN_PROGRESS, ExecutionStatus.SUCCEEDED),
    ]
    assert [t.at for t in transitions] == sorted(t.at for t in transitions)
    assert transitions[-1].at == state.finished_at
