"""THE provider registry: one line per provider. Everything that depends on which providers exist reads it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from conveyor.interface import ActionCategory
from conveyor.model import ActionContext, CompensationStep
from conveyor.providers.cloudformation import CLOUDFORMATION
from conveyor.providers.codebuild import CODEBUILD
from conveyor.providers.codedeploy import CODEDEPLOY, CODEDEPLOY_TO_ECS
from conveyor.providers.commands import COMMANDS
from conveyor.providers.contract import ActivityCall, OutputVariables, ProviderContract
from conveyor.providers.ecr import ECR
from conveyor.providers.ecs import ECS
from conveyor.providers.elastic_beanstalk import ELASTIC_BEANSTALK
from conveyor.providers.git import GIT
from conveyor.providers.git_sources import CODECOMMIT, CODESTAR_SOURCE_CONNECTION, GITHUB
from conveyor.providers.lambda_invoke import LAMBDA
from conveyor.providers.manual import MANUAL
from conveyor.providers.noop import NOOP
from conveyor.providers.s3 import S3
from conveyor.providers.step_functions import STEP_FUNCTIONS

PROVIDERS: Mapping[str, ProviderContract] = {
    contract.name: contract
    for contract in (
        CLOUDFORMATION,
        CODEBUILD,
        CODECOMMIT,
        CODEDEPLOY,
        CODEDEPLOY_TO_ECS,
        CODESTAR_SOURCE_CONNECTION,
        COMMANDS,
        ECR,
        ELASTIC_BEANSTALK,
        ECS,
        GIT,
        GITHUB,
        LAMBDA,
        MANUAL,
        NOOP,
        S3,
        STEP_FUNCTIONS,
    )
}


def compensation_call(step: CompensationStep, context: ActionContext) -> ActivityCall:
    """The activity that runs a registered compensation step, by its provider's contract."""
    compensation = PROVIDERS[step.provider].compensation
    assert compensation is not None, f"provider '{step.provider}' registers no compensation"
    return ActivityCall(
        activity=compensation.activity,
        input=compensation.build_input(step, context),
        timeout=timedelta(seconds=step.timeout_seconds) + compensation.timeout_margin,
    )


# --- README's provider table ------------------------------------------------------------------------

REGENERATE = (
    "PYTHONPATH=$PWD python -c 'from conveyor.providers.registry import provider_table; print(provider_table())'"
)


def provider_table() -> str:
    """README's "### Providers" table, rendered from the registry (tests/test_providers_registry.py keeps
    README equal to it)."""
    rows = ["| provider | category | what it does |", "|---|---|---|"]
    for registered in PROVIDERS.values():
        for contract in (registered, *registered.variants):  # a variant: the same name, its own row
            rows.append(f"| `{contract.name}` | {_categories(contract)} | {_summary(contract)} |")
    return "\n".join(rows)


def all_contracts() -> list[ProviderContract]:
    """Every contract: the registered ones and their variants (other categories of the same provider)."""
    return [contract for registered in PROVIDERS.values() for contract in (registered, *registered.variants)]


def _categories(contract: ProviderContract) -> str:
    if set(contract.categories) == set(ActionCategory):
        return "any"
    own = contract.own_categories
    others = [c.value for c in ActionCategory if c in own and c != contract.default_category]
    return contract.default_category.value + (f" (also {', '.join(others)})" if others else "")


def _summary(contract: ProviderContract) -> str:
    if contract.output_variables != OutputVariables.FIXED:
        return contract.summary
    return contract.summary.replace("{variables}", ", ".join(f"`{name}`" for name in contract.fixed_outputs))
