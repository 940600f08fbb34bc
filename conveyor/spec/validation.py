"""Validation of a pipeline declaration: pydantic's field rules plus CodePipeline's structural rules.

`validate_pipeline` is pure (no I/O): it runs in `conveyor validate` and again inside the execution
workflow, so a bad declaration sent with `temporal workflow start` fails with the same messages.
`validate_declaration` adds what needs this machine's time-zone database and RE2 (rule time zones and
regular expressions): everything but the workflows uses it. Every problem is reported at once, each
naming the file, the path inside it and what to change.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, get_args, get_origin

from pydantic import BaseModel, ValidationError

from conveyor.providers.codebuild import environment_variables_problem
from conveyor.providers.contract import OutputVariables, ProviderContract
from conveyor.providers.registry import PROVIDERS
from conveyor.providers.rules import RULES
from conveyor.spec.declaration import (
    DECISION_SOURCES,
    Action,
    ActionCategory,
    EnvironmentVariableType,
    FailureResult,
    Pipeline,
    Rule,
)
from conveyor.text import shorten
from conveyor.variables import (
    PIPELINE_VARIABLES,
    RESERVED,
    RESERVED_KEYS,
    malformed_references,
    references,
)

# How `aws codepipeline get-pipeline` prints a secret configuration value: the action uses the credential
# configured for the worker.
MASKED_SECRET = "****"
# CodePipeline's own secret configuration keys, whatever the provider (GitHub version 1's OAuthToken); a
# provider's contract marks its others (`ConfigurationKey.secret`).
SECRET_KEYS = frozenset({"OAuthToken"})
CREDENTIALS_ADVICE = (
    "write '****' (or a {{resolve:secretsmanager:...}} reference) and give the credential to the worker: "
    "its environment or its connections configuration (README: Importing CloudFormation and Terraform, "
    "Credentials)"
)
# The one provider a `conveyor.buildspec` is for (the local CodeBuild runner).
BUILDSPEC_PROVIDER = "CodeBuild"
MAX_ACTIONS_PER_PIPELINE = 500
AFTER_EVERY_ACTION = 10**6  # a runOrder later than any action's
PULL_REQUEST_EVENTS = ("OPEN", "UPDATED", "CLOSED")


@dataclass(frozen=True)
class SpecIssue:
    path: str
    message: str

    def render(self, source: str) -> str:
        return f"{source}: {self.path}: {self.message}" if self.path else f"{source}: {self.message}"


class DeclarationError(ValueError):
    """A declaration that cannot run; `str()` lists every problem, one per line."""

    def __init__(self, source: str, issues: list[SpecIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__("\n".join(issue.render(source) for issue in issues))


@dataclass
class ValidationReport:
    pipeline: Pipeline | None
    errors: list[SpecIssue] = field(default_factory=list)
    warnings: list[SpecIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.pipeline is not None and not self.errors


def unwrap_declaration(data: Any) -> Any:
    """`aws codepipeline get-pipeline` prints {"pipeline": ..., "metadata": ...}: take the pipeline."""
    if isinstance(data, dict) and isinstance(data.get("pipeline"), dict):
        return data["pipeline"]
    return data


def validate_pipeline(data: Any) -> ValidationReport:
    data = unwrap_declaration(data)
    if not isinstance(data, dict):
        return ValidationReport(None, [SpecIssue("", "the declaration must be a mapping with 'name' and 'stages'")])
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as exc:
        return ValidationReport(None, [_from_pydantic(err) for err in exc.errors()])
    report = ValidationReport(pipeline)
    _check_structure(pipeline, report)
    return report


def validate_declaration(data: Any) -> ValidationReport:
    """`validate_pipeline`, plus the rule values checked with this machine's time-zone database and
    RE2 (`rule_value_problems`). Not for workflows, which must not read the machine: there a bad value
    is found when the rule runs, and errors it."""
    report = validate_pipeline(data)
    if report.pipeline is not None:
        report.errors += rule_value_problems(report.pipeline)
    return report


def parse_pipeline(data: Any, source: str) -> Pipeline:
    """The validated pipeline (`validate_declaration`), or DeclarationError listing every problem."""
    report = validate_declaration(data)
    if not report.ok:
        raise DeclarationError(source, report.errors)
    assert report.pipeline is not None
    return report.pipeline


# --- pydantic errors, made readable ---------------------------------------------------------------


def format_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _from_pydantic(err: Any) -> SpecIssue:
    loc = [part for part in err["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
    kind = err["type"]
    if kind == "extra_forbidden":
        guess = _closest(str(loc[-1]), _fields_at(Pipeline, loc[:-1]))
        message = f"unknown field '{loc[-1]}': " + (
            f"did you mean '{guess}'?"
            if guess
            else "check its spelling (CodePipeline's fields are camelCase); Conveyor's own settings go under 'conveyor'"
        )
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "too_long" and "actual_length" in err.get("ctx", {}):
        message = f"has {err['ctx']['actual_length']} items; at most {err['ctx']['max_length']} are allowed"
    elif kind == "too_short" and "actual_length" in err.get("ctx", {}):
        least = err["ctx"]["min_length"]
        message = f"has {err['ctx']['actual_length']} items; at least {least} {'is' if least == 1 else 'are'} needed"
    elif kind == "string_pattern_mismatch":
        message = f"'{shorten(str(err['input']))}' is not allowed: must match {err['ctx']['pattern']}"
    else:
        message = err["msg"][0].lower() + err["msg"][1:]
        if "input" in err and not isinstance(err["input"], (dict, list)):
            message += f" (got {_quoted(err['input'])})"
    return SpecIssue(format_path(loc), message)


def _fields_at(model: type[BaseModel], loc: Iterable[Any]) -> list[str]:
    """The field names (aliases) of the declaration model at `loc` (a pydantic error location), for a
    "did you mean"; empty when the location does not lead to a model."""
    annotation: Any = model
    for part in loc:
        annotation_before, annotation = annotation, _model_of(annotation)
        if annotation is None:
            return []
        if isinstance(part, int) or _holds_mapping(annotation_before):
            continue  # an item of a list or a key of a mapping: `_model_of` already looked inside it
        fields = {info.alias or name: info for name, info in annotation.model_fields.items()}
        info = fields.get(part)
        if info is None:
            return []
        annotation = info.annotation
    found = _model_of(annotation)
    return [] if found is None else [info.alias or name for name, info in found.model_fields.items()]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds: itself, or inside Optional, list, dict or Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = get_origin(annotation)
    if origin is None:
        return None
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _holds_mapping(annotation: Any) -> bool:
    origin = get_origin(annotation)
    return origin is dict or (origin is not None and any(_holds_mapping(a) for a in get_args(annotation)))


def _quoted(value: Any) -> str:
    """A wrong value as the message quotes it: its repr, cut when long (a 5 MB string stays out)."""
    return repr(shorten(value)) if isinstance(value, str) else shorten(repr(value))


# --- CodePipeline's structural rules --------------------------------------------------------------


def _check_structure(pipeline: Pipeline, report: ValidationReport) -> None:
    errors = report.errors
    _check_unique_names(pipeline, errors)
    _check_source_placement(pipeline, report)
    _check_providers(pipeline, errors)
    _check_artifacts(pipeline, errors)
    _check_action_regions(pipeline, errors)
    _check_clone_ref_consumers(pipeline, errors)
    _check_namespaces_and_variables(pipeline, errors)
    _check_failure_modes(pipeline, errors)
    _check_triggers(pipeline, errors)
    _check_skippable_outputs(pipeline, errors)
    _check_not_yet_supported(pipeline, report)
    _check_secrets(pipeline, report)
    total = sum(len(stage.actions) for stage in pipeline.stages)
    if total > MAX_ACTIONS_PER_PIPELINE:
        errors.append(
            SpecIssue("stages", f"{total} actions in the pipeline; at most {MAX_ACTIONS_PER_PIPELINE} are allowed")
        )


def _check_secrets(pipeline: Pipeline, report: ValidationReport) -> None:
    """A literal secret in a secret-bearing configuration key is refused (it would be recorded in every
    execution's history); get-pipeline's `****` is accepted, with a warning saying where the secret comes from.
    The value itself is never repeated in a message."""
    for si, ai, _stage, action in pipeline.all_actions():
        contract = PROVIDERS.get(action.action_type_id.provider)
        marked = {key.name for key in (contract.configuration or ()) if key.secret} if contract else set()
        for name, value in action.configuration.items():
            where = f"stages[{si}].actions[{ai}].configuration.{name}"
            if value == MASKED_SECRET:
                report.warnings.append(
                    SpecIssue(
                        where,
                        "'****' (a secret as get-pipeline prints it) uses the credential configured for the worker",
                    )
                )
            elif (name in SECRET_KEYS or name in marked) and not _secret_reference(value):
                report.errors.append(
                    SpecIssue(where, f"'{name}' holds a literal secret: a declaration must not; {CREDENTIALS_ADVICE}")
                )


def _secret_reference(value: str) -> bool:
    """A value that names where a secret is rather than holding it."""
    return "#{" in value or value.startswith("{{resolve:")


def _check_unique_names(pipeline: Pipeline, errors: list[SpecIssue]) -> None:
    seen_stages: dict[str, int] = {}
    for si, stage in enumerate(pipeline.stages):
        if stage.name in seen_stages:
            errors.append(
                SpecIssue(
                    f"stages[{si}].name",
                    f"stage name '{stage.name}' is already used by stages[{seen_stages[stage.name]}]; "
                    "stage names must be unique",
                )
            )
        seen_stages.setdefault(stage.name, si)
        seen_actions: dict[str, int] = {}
        for ai, action in enumerate(stage.actions):
            if action.name in seen_actions:
                errors.append(
                    SpecIssue(
                        f"stages[{si}].actions[{ai}].name",
                        f"action name '{action.name}' is already used by stages[{si}].actions"
                        f"[{seen_actions[action.name]}]; action names must be unique in a stage",
                    )
                )
            seen_actions.setdefault(action.name, ai)
    seen_vars: dict[str, int] = {}
    for vi, variable in enumerate(pipeline.variables):
        if variable.name in seen_vars:
            errors.append(
                SpecIssue(
                    f"variables[{vi}].name",
                    f"pipeline variable '{variable.name}' is declared twice "
                    f"(also variables[{seen_vars[variable.name]}]); remove one",
                )
            )
        seen_vars.setdefault(variable.name, vi)


def _check_source_placement(pipeline: Pipeline, report: ValidationReport) -> None:
    for si, ai, _stage, action in pipeline.all_actions():
        is_source = action.action_type_id.category == ActionCategory.SOURCE
        if si > 0 and is_source:
            report.errors.append(
                SpecIssue(
                    f"stages[{si}].actions[{ai}].actionTypeId.category",
                    "Source actions are allowed only in the first stage; move this action there",
                )
            )
    first = pipeline.stages[0]
    sources = [a for a in first.actions if a.action_type_id.category == ActionCategory.SOURCE]
    if sources:
        for ai, action in enumerate(first.actions):
            if action.action_type_id.category != ActionCategory.SOURCE:
                report.errors.append(
                    SpecIssue(
                        f"stages[0].actions[{ai}].actionTypeId.category",
                        f"the first stage holds Source actions, so it may hold only Source actions; "
                        f"move '{action.name}' to a later stage",
                    )
                )
    else:
        report.warnings.append(
            SpecIssue("stages[0]", "no Source stage: CodePipeline requires one; Conveyor runs without it")
        )
    if len(pipeline.stages) < 2:
        report.warnings.append(SpecIssue("stages", "CodePipeline requires at least 2 stages; Conveyor runs 1"))


def _check_providers(pipeline: Pipeline, errors: list[SpecIssue]) -> None:
    supported = ", ".join(sorted(PROVIDERS))
    for si, ai, _stage, action in pipeline.all_actions():
        where = f"stages[{si}].actions[{ai}]"
        type_id = action.action_type_id
        contract = PROVIDERS.get(type_id.provider)
        if contract is None:
            guess = _closest(type_id.provider, PROVIDERS)
            errors.append(
                SpecIssue(
                    f"{where}.actionTypeId.provider",
                    f"provider '{type_id.provider}' ({type_id.category.value}) is not supported by Conveyor yet; "
                    + (f"did you mean '{guess}'? " if guess else "")
                    + f"supported providers: {supported}",
                )
            )
            continue
        if type_id.category not in contract.categories:
            allowed = ", ".join(sorted(c.value for c in contract.categories))
            errors.append(
                SpecIssue(
                    f"{where}.actionTypeId.category",
                    f"provider '{type_id.provider}' cannot have category '{type_id.category.value}'; use {allowed}",
                )
            )
        contract = contract.for_category(type_id.category)  # S3: Source and Deploy are two contracts
        errors += _configuration_issues(contract, action, where)
        errors += _shape_issues(contract, action, where)
        errors += _extension_issues(contract, action, where)


def _configuration_issues(contract: ProviderContract, action: Action, where: str) -> list[SpecIssue]:
    """Unknown keys (with what they may have meant), missing required keys, values of the wrong type."""
    keys = contract.configuration_keys
    if keys is None:
        return []
    issues: list[SpecIssue] = []
    for name, value in action.configuration.items():
        key = keys.get(name)
        if key is None:
            guess = _closest(name, keys)
            issues.append(
                SpecIssue(
                    f"{where}.configuration.{name}",
                    f"'{name}' is not a configuration key of provider '{contract.name}'; "
                    + (f"did you mean '{guess}'? " if guess else "")
                    + f"allowed: {', '.join(sorted(keys)) or 'none'}",
                )
            )
            continue
        problem = key.problem(value)
        if problem:
            issues.append(SpecIssue(f"{where}.configuration.{name}", problem))
    for name in sorted(contract.required_keys - set(action.configuration)):
        issues.append(
            SpecIssue(f"{where}.configuration", f"provider '{contract.name}' needs configuration key '{name}'")
        )
    if contract.configuration_check is not None:
        for name, problem in contract.configuration_check(action.configuration):
            issues.append(SpecIssue(f"{where}.configuration.{name}", f"provider '{contract.name}': {name} {problem}"))
    if contract.artifact_check is not None:
        inputs = [artifact.name for artifact in action.input_artifacts]
        for name, problem in contract.artifact_check(action.configuration, inputs):
            issues.append(SpecIssue(f"{where}.configuration.{name}", f"provider '{contract.name}': {name} {problem}"))
    return issues


def _shape_issues(contract: ProviderContract, action: Action, where: str) -> list[SpecIssue]:
    """Commands, artifact counts and output variables, as the provider takes them."""
    issues: list[SpecIssue] = []
    name, limits = contract.name, contract.artifacts
    if contract.needs_commands and not action.commands:
        issues.append(SpecIssue(f"{where}.commands", f"a '{name}' action needs 1 to 50 commands"))
    if not contract.needs_commands and action.commands:
        issues.append(SpecIssue(f"{where}.commands", f"provider '{name}' does not run commands"))
    if len(action.output_artifacts) > limits.max_outputs:
        most = limits.max_outputs
        issues.append(
            SpecIssue(
                f"{where}.outputArtifacts",
                f"provider '{name}' produces at most {most} output artifact{'s' if most != 1 else ''}"
                if most
                else f"provider '{name}' produces no output artifacts; remove 'outputArtifacts'",
            )
        )
    inputs = len(action.input_artifacts)
    if inputs and limits.max_inputs == 0:
        issues.append(SpecIssue(f"{where}.inputArtifacts", f"provider '{name}' takes no input artifacts"))
    elif limits.max_inputs is not None and inputs > limits.max_inputs:
        most = limits.max_inputs
        issues.append(
            SpecIssue(
                f"{where}.inputArtifacts",
                f"provider '{name}' takes at most {most} input artifact{'s' if most != 1 else ''}",
            )
        )
    if inputs < limits.min_inputs:
        least = limits.min_inputs
        issues.append(
            SpecIssue(
                f"{where}.inputArtifacts",
                f"provider '{name}' needs at least {least} input artifact{'s' if least != 1 else ''}",
            )
        )
    if action.output_variables and contract.output_variables != OutputVariables.DYNAMIC:
        issues.append(
            SpecIssue(
                f"{where}.outputVariables", f"provider '{name}' exports its own variables; remove 'outputVariables'"
            )
        )
    return issues


def _extension_issues(contract: ProviderContract, action: Action, where: str) -> list[SpecIssue]:
    """`conveyor.approval` and `conveyor.rollback`, for the providers that take them; environment variables."""
    errors: list[SpecIssue] = []
    policy = action.conveyor.approval
    if policy is not None:
        if not contract.waits_for_approval:
            errors.append(SpecIssue(f"{where}.conveyor.approval", f"an approval policy is for {_approvals()} actions"))
        for ai_, approver in enumerate(policy.approvers):
            problem = approver_problem(approver)
            if problem:
                errors.append(SpecIssue(f"{where}.conveyor.approval.approvers[{ai_}]", problem))
        if policy.slack_channel is not None and not re.match(r"^[CG][A-Z0-9]+$", policy.slack_channel):
            errors.append(
                SpecIssue(
                    f"{where}.conveyor.approval.slackChannel",
                    f"'{policy.slack_channel}' is not a Slack channel id; use the id (e.g. C0123ABCD, "
                    "in the channel's details), not its name",
                )
            )
        groups = any(a.startswith("slack-group:") for a in policy.approvers)
        if policy.approvers and not groups and policy.quorum > len(policy.approvers):
            errors.append(
                SpecIssue(
                    f"{where}.conveyor.approval.quorum",
                    f"a quorum of {policy.quorum} needs at least {policy.quorum} approvers; "
                    f"{len(policy.approvers)} are listed",
                )
            )
        for si_, source in enumerate(policy.sources or []):
            if source not in DECISION_SOURCES:
                errors.append(
                    SpecIssue(
                        f"{where}.conveyor.approval.sources[{si_}]",
                        f"'{source}' is not a decision source; use {', '.join(DECISION_SOURCES)}",
                    )
                )
    if action.conveyor.buildspec is not None and contract.name != BUILDSPEC_PROVIDER:
        errors.append(SpecIssue(f"{where}.conveyor.buildspec", f"a buildspec is for '{BUILDSPEC_PROVIDER}' actions"))
    if action.conveyor.codebuild is not None and contract.name != BUILDSPEC_PROVIDER:
        errors.append(SpecIssue(f"{where}.conveyor.codebuild", f"this is for '{BUILDSPEC_PROVIDER}' actions"))
    errors += _codebuild_issues(action, contract, where)
    errors += _release_issues(contract, action, where)
    if action.conveyor.rollback and not (contract.compensation and contract.compensation.takes_rollback_commands):
        errors.append(SpecIssue(f"{where}.conveyor.rollback", f"rollback commands are for {_rollbacks()} actions"))
    for ei, env in enumerate(action.environment_variables):
        if env.type == EnvironmentVariableType.SECRETS_MANAGER:
            errors.append(
                SpecIssue(
                    f"{where}.environmentVariables[{ei}].type",
                    "SECRETS_MANAGER variables are not supported yet; use 'conveyor.passEnvironment' "
                    "to pass a secret from the worker's environment",
                )
            )
    return errors


def _release_issues(contract: ProviderContract, action: Action, where: str) -> list[SpecIssue]:
    """`conveyor.bake` and `conveyor.waves`: for actions that run an activity (not sources, not approvals);
    waves named once each, overriding only the provider's own configuration keys with values of their type."""
    issues: list[SpecIssue] = []
    extension = action.conveyor
    runs = contract.activity is not None and action.action_type_id.category != ActionCategory.SOURCE
    for key, given in (("bake", extension.bake is not None), ("waves", extension.waves is not None)):
        if given and not runs:
            issues.append(
                SpecIssue(
                    f"{where}.conveyor.{key}", "is for actions that deploy or run something, not sources or approvals"
                )
            )
    keys = contract.configuration_keys
    seen: set[str] = set()
    for wi, wave in enumerate(extension.waves or []):
        at = f"{where}.conveyor.waves[{wi}]"
        if wave.name in seen:
            issues.append(SpecIssue(f"{at}.name", f"wave '{wave.name}' is listed twice; give each wave its own name"))
        seen.add(wave.name)
        for key, value in wave.configuration.items():
            known = keys.get(key) if keys is not None else None
            if keys is not None and known is None:
                issues.append(
                    SpecIssue(
                        f"{at}.configuration.{key}",
                        f"'{key}' is not a configuration key of '{contract.name}'; use one of {', '.join(keys)}",
                    )
                )
            elif known is not None and (problem := known.problem(value)):
                issues.append(SpecIssue(f"{at}.configuration.{key}", problem))
        if contract.configuration_check is not None and runs:
            merged = {**action.configuration, **wave.configuration}
            for key, why in contract.configuration_check(merged):
                issues.append(SpecIssue(f"{at}.configuration.{key}", why))
    return issues


def _approvals() -> str:
    return " or ".join(f"'{c.name}'" for c in PROVIDERS.values() if c.waits_for_approval)


def _rollbacks() -> str:
    return " or ".join(
        f"'{c.name}'" for c in PROVIDERS.values() if c.compensation and c.compensation.takes_rollback_commands
    )


def _check_artifacts(pipeline: Pipeline, errors: list[SpecIssue]) -> None:
    producers: dict[str, tuple[int, int, int]] = {}  # artifact -> (stage index, runOrder, action index)
    for si, ai, _stage, action in pipeline.all_actions():
        for oi, out in enumerate(action.output_artifacts):
            if out.name in producers:
                psi, _, pai = producers[out.name]
                errors.append(
                    SpecIssue(
                        f"stages[{si}].actions[{ai}].outputArtifacts[{oi}].name",
                        f"artifact '{out.name}' is already produced by stages[{psi}].actions[{pai}]; "
                        "output artifact names must be unique in the pipeline",
                    )
                )
            else:
                producers[out.name] = (si, action.run_order, ai)
    for si, ai, _stage, action in pipeline.all_actions():
        for ii, inp in enumerate(action.input_artifacts):
            producer = producers.get(inp.name)
            earlier = producer is not None and (
                producer[0] < si or (producer[0] == si and producer[1] < action.run_order)
            )
            if not earlier:
                message = f"artifact '{inp.name}' is not produced by an earlier action"
                if producer is not None:
                    psi, prun, pai = producer
                    if (psi, pai) == (si, ai):
                        message += "; an action cannot take its own output artifact as input"
                    elif psi == si:
                        message += (
                            f"; stages[{psi}].actions[{pai}] produces it with runOrder {prun}: "
                            "give this action a higher runOrder"
                        )
                    else:
                        message += f"; stages[{psi}].actions[{pai}] produces it in a later stage"
                errors.append(SpecIssue(f"stages[{si}].actions[{ai}].inputArtifacts[{ii}]", message))


def _check_action_regions(pipeline: Pipeline, errors: list[SpecIssue]) -> None:
    """With per-region `artifactStores`, an action's `region` needs its entry: its artifacts are kept there."""
    if not pipeline.artifact_stores:
        return
    for si, ai, _stage, action in pipeline.all_actions():
        if action.region and action.region not in pipeline.artifact_stores:
            declared = ", ".join(sorted(pipeline.artifact_stores))
            errors.append(
                SpecIssue(
                    f"stages[{si}].actions[{ai}].region",
                    f"region '{action.region}' has no entry in artifactStores ({declared}): add one for it (an "
                    "action's artifacts are kept in its region's store)",
                )
            )


def _check_clone_ref_consumers(pipeline: Pipeline, errors: list[SpecIssue]) -> None:
    """CodePipeline's rule: a CODEBUILD_CLONE_REF artifact (a clone with `.git`) is consumed by CodeBuild only."""
    clone_refs = {
        out.name: action.name
        for _, _, _, action in pipeline.all_actions()
        if action.configuration.get("OutputArtifactFormat") == "CODEBUILD_CLONE_REF"
        for out in action.output_artifacts
    }
    for si, ai, _stage, action in pipeline.all_actions():
        if action.action_type_id.provider == "CodeBuild":
            continue
        for ii, inp in enumerate(action.input_artifacts):
            if inp.name in clone_refs:
                errors.append(
                    SpecIssue(
                        f"stages[{si}].actions[{ai}].inputArtifacts[{ii}]",
                        f"artifact '{inp.name}' is a CODEBUILD_CLONE_REF clone from '{clone_refs[inp.name]}', which "
                        "only a CodeBuild action can consume; set that source's OutputArtifactFormat to CODE_ZIP",
                    )
                )


def _closest(name: str, known: Iterable[str]) -> str | None:
    """The known name a typo most likely meant (case ignored), or None when none is close."""
    by_lower = {k.lower(): k for k in known}
    match = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.75)
    return by_lower[match[0]] if match else None


def _action_texts(action: Action) -> list[tuple[str, str]]:
    """(path suffix, text) of every place a variable reference may appear in an action."""
    texts = [(f"configuration.{k}", v) for k, v in action.configuration.items()]
    texts += [(f"commands[{i}]", c) for i, c in enumerate(action.commands or [])]
    texts += [(f"environmentVariables[{i}].value", e.value) for i, e in enumerate(action.environment_variables)]
    texts += [(f"conveyor.rollback[{i}]", c) for i, c in enumerate(action.conveyor.rollback)]
    for wi, wave in enumerate(action.conveyor.waves or []):
        texts += [(f"conveyor.waves[{wi}].configuration.{k}", v) for k, v in wave.configuration.items()]
    return texts


def _exported_variables(action: Action) -> frozenset[str] | None:
    contract = PROVIDERS.get(action.action_type_id.provider)
    if contract is None:
        return None  # already reported
    return contract.for_category(action.action_type_id.category).exported_variables(action)  # None: already reported


def _check_namespaces_and_variables(pipeline: Pipeline, errors: list[SpecIssue]) -> None:
    artifact_names = {out.name for _, _, _, a in pipeline.all_actions() for out in a.output_artifacts}
    owners: dict[str, tuple[int, int, int, Action]] = {}  # namespace -> (stage, runOrder, index, action)
    for si, ai, _stage, action in pipeline.all_actions():
        ns = action.namespace
        if ns is None:
            continue
        where = f"stages[{si}].actions[{ai}].namespace"
        if ns in owners:
            osi, _, oai, _ = owners[ns]
            errors.append(
                SpecIssue(
                    where,
                    f"namespace '{ns}' is already used by stages[{osi}].actions[{oai}]; "
                    "namespaces must be unique in the pipeline",
                )
            )
        elif ns in artifact_names:
            errors.append(SpecIssue(where, f"namespace '{ns}' equals an artifact name; choose another"))
        elif ns in (PIPELINE_VARIABLES, RESERVED):
            errors.append(SpecIssue(where, f"namespace '{ns}' is reserved; choose another"))
        else:
            owners[ns] = (si, action.run_order, ai, action)
    declared = {v.name for v in pipeline.variables}
    for si, ai, _stage, action in pipeline.all_actions():
        for suffix, text in _action_texts(action):
            where = f"stages[{si}].actions[{ai}].{suffix}"
            errors += _reference_issues(where, text, si, action.run_order, declared, owners)
    for site in _rules(pipeline):
        # A beforeEntry rule runs before any action of its stage; onSuccess/onFailure rules after them.
        run_order = AFTER_EVERY_ACTION if site.after_actions else 0
        for suffix, text in _rule_texts(site.rule):
            errors += _reference_issues(f"{site.where}.{suffix}", text, site.stage_index, run_order, declared, owners)


def _reference_issues(
    where: str,
    text: str,
    stage_index: int,
    run_order: int,
    declared: set[str],
    owners: dict[str, tuple[int, int, int, Action]],
) -> list[SpecIssue]:
    """What is wrong with the variable references in one text: malformed ones, and those that cannot resolve."""
    issues = [
        SpecIssue(
            where,
            f"'{fragment}' is not a variable reference: write #{{namespace.key}} (letters, digits, @ - _), "
            "closed with '}'",
        )
        for fragment in malformed_references(text)
    ]
    for ns, key in references(text):
        problem = _reference_problem(ns, key, stage_index, run_order, declared, owners)
        if problem:
            issues.append(SpecIssue(where, problem))
    return issues


def _rule_texts(rule: Rule) -> list[tuple[str, str]]:
    """(path suffix, text) of every place a variable reference may appear in a condition rule."""
    texts = [(f"configuration.{k}", v) for k, v in rule.configuration.items()]
    return texts + [(f"commands[{i}]", c) for i, c in enumerate(rule.commands or [])]


def _reference_problem(
    ns: str,
    key: str,
    stage_index: int,
    run_order: int,
    declared: set[str],
    owners: dict[str, tuple[int, int, int, Action]],
) -> str | None:
    ref = f"#{{{ns}.{key}}}"
    if ns == PIPELINE_VARIABLES:
        return None if key in declared else f"'{ref}': pipeline variable '{key}' is not declared in 'variables'"
    if ns == RESERVED:
        return None if key in RESERVED_KEYS else f"'{ref}': codepipeline has only {', '.join(RESERVED_KEYS)}"
    owner = owners.get(ns)
    if owner is None:
        return f"'{ref}': no action has namespace '{ns}'"
    osi, orun, _oai, oaction = owner
    if not (osi < stage_index or (osi == stage_index and orun < run_order)):
        return (
            f"'{ref}': namespace '{ns}' belongs to an action that does not run earlier than this one; "
            "reference only actions of earlier stages or of a lower runOrder"
        )
    exported = _exported_variables(oaction)
    if exported is not None and key not in exported:
        listed = ", ".join(sorted(exported)) or "none"
        return f"'{ref}': action '{oaction.name}' does not export '{key}' (it exports: {listed})"
    return None


# The results a condition may have, by where it sits (CodePipeline's rules).
CONDITION_RESULTS = {
    "beforeEntry": ("FAIL", "SKIP"),
    "onSuccess": ("ROLLBACK", "FAIL"),
    "onFailure": ("ROLLBACK",),
}


def _check_failure_modes(pipeline: Pipeline, errors: list[SpecIssue]) -> None:
    first_has_sources = any(a.action_type_id.category == ActionCategory.SOURCE for a in pipeline.stages[0].actions)
    for si, stage in enumerate(pipeline.stages):
        # ROLLBACK in a PARALLEL pipeline (refused by CodePipeline) runs the stage's compensations: no
        # ROLLBACK execution can run there (README "Rollback and compensation").
        if stage.on_failure and stage.on_failure.result == FailureResult.ROLLBACK:
            if si == 0 and first_has_sources:
                errors.append(
                    SpecIssue(
                        f"stages[{si}].onFailure.result",
                        "ROLLBACK is not available for the Source stage; use FAIL or RETRY",
                    )
                )
        for field_name, block in (
            ("beforeEntry", stage.before_entry),
            ("onSuccess", stage.on_success),
            ("onFailure", stage.on_failure),
        ):
            if block is None:
                continue
            allowed = CONDITION_RESULTS[field_name]
            for ci, condition in enumerate(block.conditions):
                where = f"stages[{si}].{field_name}.conditions[{ci}].result"
                if condition.result is not None and condition.result not in allowed:
                    errors.append(
                        SpecIssue(
                            where,
                            f"'{condition.result}' is not a result of a {field_name} condition; use "
                            + " or ".join(allowed),
                        )
                    )


def _check_triggers(pipeline: Pipeline, errors: list[SpecIssue]) -> None:
    source_names = {a.name for a in pipeline.stages[0].actions if a.action_type_id.category == ActionCategory.SOURCE}
    for ti, trigger in enumerate(pipeline.triggers):
        git = trigger.git_configuration
        if git.source_action_name not in source_names:
            choices = ", ".join(sorted(source_names)) or "none: add a Source action to the first stage"
            errors.append(
                SpecIssue(
                    f"triggers[{ti}].gitConfiguration.sourceActionName",
                    f"'{git.source_action_name}' is not a Source action of the first stage; Source actions: {choices}",
                )
            )
        for pi, pull in enumerate(git.pull_request):
            for ei, event in enumerate(pull.events):
                if event not in PULL_REQUEST_EVENTS:
                    errors.append(
                        SpecIssue(
                            f"triggers[{ti}].gitConfiguration.pullRequest[{pi}].events[{ei}]",
                            f"'{event}' is not a pull request event; use OPEN, UPDATED or CLOSED",
                        )
                    )
        for pi, push in enumerate(git.push):
            if push.tags and (push.branches or push.file_paths):
                errors.append(
                    SpecIssue(
                        f"triggers[{ti}].gitConfiguration.push[{pi}]",
                        "a push filter cannot combine 'tags' with 'branches' or 'filePaths'; split it in two",
                    )
                )


def _check_not_yet_supported(pipeline: Pipeline, report: ValidationReport) -> None:
    """Declared behaviour this version does not carry out is refused, never silently skipped: a
    deployment window or a rollback that quietly does nothing is worse than an error."""
    later = "is not supported by this version of Conveyor yet"
    for site in _rules(pipeline):
        report.errors.extend(_rule_problems(site.rule, site.where, later))
    for ti, trigger in enumerate(pipeline.triggers):
        for pi, pull in enumerate(trigger.git_configuration.pull_request):
            if pull.file_paths is not None:
                report.errors.append(
                    SpecIssue(
                        f"triggers[{ti}].gitConfiguration.pullRequest[{pi}].filePaths",
                        f"pull request file path filters {later} (webhook payloads do not list a pull request's files)",
                    )
                )


class RuleSite(NamedTuple):
    where: str  # its path in the declaration
    stage_index: int
    after_actions: bool  # onSuccess / onFailure: evaluated once the stage's actions ran
    rule: Rule


def _rules(pipeline: Pipeline) -> Iterable[RuleSite]:
    """Every condition rule of the pipeline, with where it is."""
    for si, stage in enumerate(pipeline.stages):
        for field_name, block in (
            ("beforeEntry", stage.before_entry),
            ("onSuccess", stage.on_success),
            ("onFailure", stage.on_failure),
        ):
            for ci, condition in enumerate(block.conditions if block else []):
                for ri, rule in enumerate(condition.rules):
                    where = f"stages[{si}].{field_name}.conditions[{ci}].rules[{ri}]"
                    yield RuleSite(where, si, field_name != "beforeEntry", rule)


def rule_value_problems(pipeline: Pipeline) -> list[SpecIssue]:
    """A DeploymentWindow's TimeZone and a VariableCheck MATCHES pattern, checked with what evaluates
    them at run time (the time-zone database, RE2): each rule contract's `value_check`. A value holding a
    `#{...}` reference is known only at run time: there, a bad one errors its rule (and fails its stage)."""
    problems: list[SpecIssue] = []
    for where, _, _, rule in _rules(pipeline):
        contract = RULES.get(rule.rule_type_id.provider)
        if contract is not None:
            problems += [SpecIssue(f"{where}.{path}", message) for path, message in contract.value_check(rule)]
    return problems


def _rule_problems(rule: Rule, where: str, later: str) -> list[SpecIssue]:
    provider = rule.rule_type_id.provider
    contract = RULES.get(provider)
    if contract is None:
        supported = ", ".join(RULES)
        return [SpecIssue(f"{where}.ruleTypeId.provider", f"rule '{provider}' {later}; supported: {supported}")]
    problems = [
        SpecIssue(f"{where}.configuration", f"a {provider} rule needs configuration key '{key}'")
        for key in sorted(contract.required_keys - set(rule.configuration))
    ]
    problems += [
        SpecIssue(f"{where}.configuration.{key}", f"'{key}' is not a configuration key of a {provider} rule")
        for key in sorted(set(rule.configuration) - contract.allowed_keys)
    ]
    if contract.needs_commands and not rule.commands:
        problems.append(SpecIssue(f"{where}.commands", f"a {provider} rule needs 1 to 50 commands"))
    problems += [SpecIssue(f"{where}.{path}", message) for path, message in contract.check(rule)]
    return problems


def _check_skippable_outputs(pipeline: Pipeline, errors: list[SpecIssue]) -> None:
    """A stage with onFailure SKIP may produce nothing: later actions must not depend on its outputs."""
    for si, stage in enumerate(pipeline.stages):
        if not (stage.on_failure and stage.on_failure.result == FailureResult.SKIP):
            continue
        artifacts = {out.name for a in stage.actions for out in a.output_artifacts}
        namespaces = {a.namespace for a in stage.actions if a.namespace}
        for later_index in range(si + 1, len(pipeline.stages)):
            for ai, action in enumerate(pipeline.stages[later_index].actions):
                where = f"stages[{later_index}].actions[{ai}]"
                for ii, inp in enumerate(action.input_artifacts):
                    if inp.name in artifacts:
                        errors.append(
                            SpecIssue(
                                f"{where}.inputArtifacts[{ii}]",
                                f"artifact '{inp.name}' comes from stage '{stage.name}', which may be skipped "
                                "(onFailure: SKIP); produce it elsewhere or use FAIL",
                            )
                        )
                for suffix, text in _action_texts(action):
                    for ns, key in references(text):
                        if ns in namespaces:
                            errors.append(
                                SpecIssue(
                                    f"{where}.{suffix}",
                                    f"'#{{{ns}.{key}}}' comes from stage '{stage.name}', which may be skipped "
                                    "(onFailure: SKIP); use FAIL, or do not depend on it",
                                )
                            )


_APPROVER_FORMS = {
    "slack": (r"^(T[A-Z0-9]+/)?[UW][A-Z0-9]+$", "a Slack user id, e.g. 'slack:U0123ABCD' or 'slack:T0123/U0123ABCD'"),
    "slack-group": (r"^S[A-Z0-9]+$", "a Slack user group id, e.g. 'slack-group:S0123ABCD'"),
    "email": (r"^[^@\s]+@[^@\s]+$", "an email address, e.g. 'email:alice@example.com'"),
    "github": (r"^[A-Za-z0-9-]+$", "a GitHub login, e.g. 'github:octocat'"),
}


def approver_problem(approver: str) -> str | None:
    """Why an approval policy's approver entry is malformed, or None; a name without a prefix is an identity."""
    kind, colon, value = approver.partition(":")
    if not colon:
        return "an approver name may not contain spaces" if any(c.isspace() for c in approver) else None
    form = _APPROVER_FORMS.get(kind)
    if form is None:
        return f"'{kind}:' is not an approver kind; use a named identity (no prefix) or one of " + ", ".join(
            f"'{k}:'" for k in _APPROVER_FORMS
        )
    if not re.match(form[0], value):
        return f"'{approver}' is not {form[1]}"
    return None


def _codebuild_issues(action: Action, contract: ProviderContract, where: str) -> list[SpecIssue]:
    """CodeBuild: PrimarySource names one of several inputs; one buildspec override at a time."""
    if contract.name != BUILDSPEC_PROVIDER:
        return []
    issues = []
    inputs = [i.name for i in action.input_artifacts]
    primary = action.configuration.get("PrimarySource")
    if len(inputs) > 1 and not primary:
        issues.append(
            SpecIssue(
                f"{where}.configuration.PrimarySource",
                f"required with more than one input artifact: name one of {', '.join(inputs)}",
            )
        )
    elif primary and "#{" not in primary and primary not in inputs:
        issues.append(
            SpecIssue(f"{where}.configuration.PrimarySource", f"'{primary}' is not an input artifact of this action")
        )
    variables = action.configuration.get("EnvironmentVariables")
    problem = environment_variables_problem(variables) if variables else None
    if problem:
        issues.append(SpecIssue(f"{where}.configuration.EnvironmentVariables", problem))
    codebuild = action.conveyor.codebuild
    if codebuild is not None and codebuild.buildspec and codebuild.buildspec_path:
        issues.append(
            SpecIssue(f"{where}.conveyor.codebuild", "give either buildspec (inline) or buildspecPath, not both")
        )
    return issues
