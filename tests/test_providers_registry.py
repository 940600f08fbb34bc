"""The provider and rule registries are complete: every registered provider has a sensible contract, an
activity the worker registers under the contract's name (Manual excepted: a durable wait), an input builder
producing that activity's input type, a README row, a schema entry and a working `provider:` shorthand; every
rule type has an evaluator. Plus table tests of the contract-driven validation. No server needed."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from pydantic import BaseModel
from temporalio import activity

from conveyor.interface import ActionCategory, ActionOwner
from conveyor.model import ActionContext, ArtifactRef, CompensationStep
from conveyor.providers.contract import (
    ActionRequest,
    ArtifactLimits,
    ConfigurationKey,
    KeyType,
    OutputVariables,
    ProviderContract,
)
from conveyor.providers.registry import PROVIDERS, REGENERATE, all_contracts, compensation_call, provider_table
from conveyor.providers.rules import RULES
from conveyor.settings import Settings
from conveyor.spec import json_schema, validate_pipeline
from conveyor.spec.declaration import Action
from conveyor.spec.validation import _configuration_issues, _shape_issues
from conveyor.worker import activities_for
from workflows.conditions import EVALUATORS

README = Path(__file__).parent.parent / "README.md"
CONTEXT = ActionContext(pipeline_name="p", execution_id="e", stage_name="S", action_name="A")
ARTIFACT = ArtifactRef(name="In", digest="sha256:" + "0" * 64, location="/tmp/in.zip", size=0)


SAMPLE_VALUES = {"ActionMode": "CREATE_UPDATE"}  # keys whose value is one of a few


def sample_action(contract: ProviderContract, **extra: Any) -> Action:
    """A valid action of the provider, through the shorthand."""
    data: dict[str, Any] = {"name": "A", "provider": contract.name}
    if contract.needs_commands:
        data["commands"] = ["make"]
    data["configuration"] = {name: SAMPLE_VALUES.get(name, "value") for name in sorted(contract.required_keys)}
    if contract is not PROVIDERS[contract.name]:  # a variant (S3 Deploy): its own category
        data["category"] = contract.default_category.value
    data["inputArtifacts"] = [{"name": f"In{i}"} for i in range(contract.artifacts.min_inputs)]
    return Action.model_validate(data | extra)


def request_for(action: Action, contract: ProviderContract) -> ActionRequest:
    return ActionRequest(
        action=action,
        context=CONTEXT,
        configuration=dict(action.configuration),
        timeout=contract.default_timeout,
        revision_override=None,
        resolve=lambda text: text,
        artifact=lambda name: ARTIFACT.model_copy(update={"name": name}),
    )


def registered_activities() -> dict[str, Callable[..., Any]]:
    functions = activities_for(Settings(data_dir=Path("/tmp/conveyor-registry-test")))
    found = {}
    for function in functions:
        definition = activity._Definition.from_callable(function)
        assert definition is not None and definition.name is not None
        found[definition.name] = function
    return found


CONTRACTS = sorted(all_contracts(), key=lambda c: (c.name, c.default_category))


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_every_contract_is_complete(contract: ProviderContract) -> None:
    assert PROVIDERS[contract.name].for_category(contract.default_category) is contract
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,34}", contract.name)
    assert contract.summary and contract.categories
    assert contract.default_category in contract.categories
    assert isinstance(contract.owner, ActionOwner)
    assert len(set(contract.categories)) == len(contract.categories)
    assert contract.default_timeout > timedelta(0)
    assert contract.heartbeat_timeout is None or contract.heartbeat_timeout > timedelta(0)
    keys = [key.name for key in contract.configuration or ()]
    assert len(keys) == len(set(keys)), "a configuration key listed twice"
    assert bool(contract.fixed_outputs) <= (contract.output_variables == OutputVariables.FIXED)
    assert ("{variables}" in contract.summary) <= bool(contract.fixed_outputs)
    # Exactly one way to run: an activity, or (Manual) a durable wait for a decision.
    assert (contract.activity is None) == contract.waits_for_approval
    assert contract.retried_failures >= {"ActionTimeout", "ActionError"}
    assert not contract.retried_failures & {"ConfigurationError", "ArtifactError", "VariableError"}


@pytest.mark.parametrize("contract", [c for c in CONTRACTS if c.activity], ids=lambda c: c.name)
def test_the_worker_registers_each_activity_and_its_input_builder_fits_it(contract: ProviderContract) -> None:
    run = contract.activity
    assert run is not None
    function = registered_activities().get(run.name)
    assert function is not None, f"the worker registers no activity '{run.name}' ({run.module})"
    parameters = list(inspect.signature(function).parameters.values())
    assert get_type_hints(function)[parameters[-1].name] is run.input_type
    built = run.build_input(request_for(sample_action(contract), contract))
    assert type(built) is run.input_type
    assert built.context == CONTEXT  # type: ignore[attr-defined]


@pytest.mark.parametrize("contract", [c for c in CONTRACTS if c.compensation], ids=lambda c: c.name)
def test_each_compensation_is_registered_and_runs_with_a_registered_activity(contract: ProviderContract) -> None:
    compensation, run = contract.compensation, contract.activity
    assert compensation is not None and run is not None
    assert compensation.activity in registered_activities()
    action = sample_action(contract, conveyor={"rollback": ["undo"]})
    request = request_for(action, contract)
    step = compensation.register(request, run.build_input(request), 1)
    assert step is not None and step.provider == contract.name
    if compensation.takes_rollback_commands:  # undone only when the action declares how (Commands)
        assert (
            compensation.register(request_for(sample_action(contract), contract), run.build_input(request), 1) is None
        )
    call = compensation_call(step, CONTEXT)
    assert call.activity == compensation.activity and type(call.input) is compensation.input_type
    assert call.timeout == timedelta(seconds=step.timeout_seconds) + compensation.timeout_margin


def test_a_compensation_step_recorded_before_contracts_runs_the_commands_rollback() -> None:
    """StageResults in recorded histories hold steps without `provider`: they are Commands rollbacks."""
    old = CompensationStep.model_validate_json(
        '{"stageName": "S", "actionName": "A", "sequence": 1, "commands": ["undo"], "timeoutSeconds": 60}'
    )
    call = compensation_call(old, CONTEXT)
    assert call.activity == "run_commands" and call.timeout == timedelta(minutes=2)
    assert call.input.model_dump(by_alias=True)["commands"] == ["undo"]


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_the_shorthand_expands_to_the_contracts_category_and_owner(contract: ProviderContract) -> None:
    type_id = sample_action(contract).action_type_id
    assert (type_id.category, type_id.owner, type_id.provider) == (
        contract.default_category,
        contract.owner,
        contract.name,
    )


def test_the_schema_names_every_provider_without_refusing_others() -> None:
    schema = json_schema()
    shorthand = schema["$defs"]["Action"]["properties"]["provider"]
    canonical = schema["$defs"]["ActionTypeId"]["properties"]["provider"]
    for entry in (shorthand, canonical):
        assert entry["examples"] == list(PROVIDERS) and "enum" not in entry


def test_readme_provider_table_is_the_registrys() -> None:
    text = README.read_text()
    lines = text[text.index("### Providers") :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    table = "\n".join(lines[start:end])
    assert table == provider_table(), f"README's provider table is out of date; regenerate it with: {REGENERATE}"
    for contract in CONTRACTS:
        assert f"| `{contract.name}` |" in table


def test_every_rule_type_has_an_evaluator() -> None:
    assert set(EVALUATORS) == set(RULES)
    for contract in RULES.values():
        assert contract.evaluation and contract.required_keys <= contract.allowed_keys


# --- contract-driven validation, table-tested with a made-up provider ------------------------------------

DEPLOYER = ProviderContract(
    name="Deployer",
    summary="deploys",
    categories=(ActionCategory.DEPLOY,),
    default_category=ActionCategory.DEPLOY,
    owner=ActionOwner.AWS,
    configuration=(
        ConfigurationKey("BucketName", required=True),
        ConfigurationKey("Extract", required=True, type=KeyType.BOOLEAN),
        ConfigurationKey("Retries", type=KeyType.INTEGER),
    ),
    artifacts=ArtifactLimits(min_inputs=1, max_inputs=1, max_outputs=0),
    default_timeout=timedelta(minutes=10),
)
W = "stages[0].actions[0]"


def deployer(**extra: Any) -> Action:
    data = {"name": "D", "actionTypeId": {"category": "Deploy", "owner": "AWS", "provider": "Deployer"}}
    return Action.model_validate(data | extra)


@pytest.mark.parametrize(
    ("configuration", "expected"),
    [
        ({"BucketName": "b", "Extract": "true"}, []),
        ({"BucketName": "b", "Extract": "TRUE", "Retries": "3"}, []),
        ({"BucketName": "b", "Extract": "#{Vars.extract}"}, []),
        (
            {"BucketName": "b", "Extract": "yes"},
            [f"{W}.configuration.Extract: 'yes' is not a boolean; use true or false"],
        ),
        (
            {"BucketName": "b", "Extract": "1", "Retries": "x"},
            [
                f"{W}.configuration.Extract: '1' is not a boolean; use true or false",
                f"{W}.configuration.Retries: 'x' is not a whole number",
            ],
        ),
        ({"Extract": "false"}, [f"{W}.configuration: provider 'Deployer' needs configuration key 'BucketName'"]),
        (
            {"BucketName": "b", "Extract": "true", "Bucketname": "c"},
            [
                f"{W}.configuration.Bucketname: 'Bucketname' is not a configuration key of provider 'Deployer'; "
                "did you mean 'BucketName'? allowed: BucketName, Extract, Retries"
            ],
        ),
    ],
)
def test_configuration_is_checked_against_the_contract(configuration: dict[str, str], expected: list[str]) -> None:
    issues = _configuration_issues(DEPLOYER, deployer(configuration=configuration), W)
    assert [f"{i.path}: {i.message}" for i in issues] == expected


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (["A"], []),
        ([], [f"{W}.inputArtifacts: provider 'Deployer' needs at least 1 input artifact"]),
        (["A", "B"], [f"{W}.inputArtifacts: provider 'Deployer' takes at most 1 input artifact"]),
    ],
)
def test_artifact_limits_come_from_the_contract(inputs: list[str], expected: list[str]) -> None:
    action = deployer(inputArtifacts=[{"name": n} for n in inputs])
    assert [f"{i.path}: {i.message}" for i in _shape_issues(DEPLOYER, action, W)] == expected


def test_a_close_typo_of_a_registered_providers_key_is_named() -> None:
    declaration = {
        "name": "demo",
        "stages": [
            {"name": "Source", "actions": [{"name": "Get", "provider": "Git", "configuration": {"RepositoryURL": "."}}]}
        ],
    }
    messages = [f"{i.path}: {i.message}" for i in validate_pipeline(declaration).errors]
    assert messages == [
        "stages[0].actions[0].configuration.RepositoryURL: 'RepositoryURL' is not a configuration key of provider "
        "'Git'; did you mean 'RepositoryUrl'? allowed: BranchName, RepositoryUrl",
        "stages[0].actions[0].configuration: provider 'Git' needs configuration key 'RepositoryUrl'",
    ]


def test_an_input_builder_is_pure_data_in_data_out() -> None:
    """Builders call only what the request gives them (the stage's resolver), so they run in the sandbox."""
    contract = PROVIDERS["Commands"]
    assert contract.activity is not None
    seen: list[str] = []

    def resolve(text: str) -> str:
        seen.append(text)
        return text.upper()

    action = sample_action(contract, environmentVariables=[{"name": "X", "value": "v"}])
    request = request_for(action, contract)
    request = dataclasses.replace(request, resolve=resolve)
    built: BaseModel = contract.activity.build_input(request)
    assert seen == ["make", "v"]
    assert built.model_dump(by_alias=True)["commands"] == ["MAKE"]
