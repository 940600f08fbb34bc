"""Validation of pipeline declarations: CodePipeline's rules, readable messages, loading, the CLI.

No Temporal here: everything is pure validation, file reading and two short `conveyor` subprocesses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.providers.registry import PROVIDERS
from conveyor.spec import DeclarationError, json_schema, parse_pipeline, validate_declaration, validate_pipeline
from conveyor.spec.loading import load_pipeline, read_declaration, validate_file

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
EXAMPLES = sorted(ROOT.glob("examples/*/pipeline.yaml"))
assert len(EXAMPLES) >= 3, "the examples moved: update EXAMPLES"
SOURCE = "pipeline.yaml"

# What validation lists as supported: every provider of the registry, in name order.
SUPPORTED = ", ".join(sorted(PROVIDERS))


# --- small builders: a valid pipeline is Source (Git) then Build; each case breaks one thing --------


def git(name: str = "Checkout", **extra: Any) -> dict[str, Any]:
    base = {"name": name, "provider": "Git", "configuration": {"RepositoryUrl": "."}}
    return {**base, "outputArtifacts": [{"name": "Code"}], "namespace": "Src", **extra}


def cmd(name: str = "Make", *commands: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "provider": "Commands", "commands": list(commands) or ["make"], **extra}


def manual(name: str = "Approve", **extra: Any) -> dict[str, Any]:
    return {"name": name, "provider": "Manual", **extra}


def stage(name: str, *actions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "actions": list(actions), **extra}


def pipe(*stages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "demo", "stages": list(stages), **extra}


def two(*build_actions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Source stage (Git, namespace Src, artifact Code) followed by a Build stage of these actions."""
    return pipe(stage("Source", git()), stage("Build", *build_actions), **extra)


def trigger(source_action: str = "Checkout", **git_configuration: Any) -> list[dict[str, Any]]:
    config = {"sourceActionName": source_action, **git_configuration}
    return [{"providerType": "CodeStarSourceConnection", "gitConfiguration": config}]


def errors_of(data: Any) -> list[str]:
    return [issue.render(SOURCE) for issue in validate_pipeline(data).errors]


def many_actions(stages: int, per_stage: int) -> dict[str, Any]:
    noop = [{"name": f"A{a}", "provider": "Noop"} for a in range(per_stage)]
    return pipe(*[stage(f"S{s}", *noop) for s in range(stages)])


A = "pipeline.yaml: stages[1].actions[0]"  # the first Build action: where most cases go wrong
GIT_EXPORTS = (
    "AuthorDate, AuthorEmail, AuthorName, BranchName, CommitId, CommitMessage, CommitterDate, "
    "FullRepositoryName, RepositoryName"
)
UNKNOWN_FIELD = "check its spelling (CodePipeline's fields are camelCase); Conveyor's own settings go under 'conveyor'"
BIN = [{"name": "Bin"}]
ROLLBACK = {"result": "ROLLBACK"}
WINDOW = {
    "name": "Window",
    "ruleTypeId": {"provider": "DeploymentWindow"},
    "configuration": {"Cron": "* * 9-17 ? * MON-FRI"},
}

# (id, declaration, the one expected error, rendered for pipeline.yaml)
BROKEN: list[tuple[str, Any, str]] = [
    # names and structure
    (
        "duplicate-stage-name",
        pipe(stage("Source", git()), stage("Build", cmd()), stage("Build", cmd())),
        "pipeline.yaml: stages[2].name: stage name 'Build' is already used by stages[1]; stage names must be unique",
    ),
    (
        "duplicate-action-name",
        two(cmd("Make"), cmd("Make")),
        "pipeline.yaml: stages[1].actions[1].name: action name 'Make' is already used by stages[1].actions[0]; "
        "action names must be unique in a stage",
    ),
    (
        "source-outside-first-stage",
        pipe(stage("Source", git()), stage("Build", git("Again", namespace="Other", outputArtifacts=[]))),
        f"{A}.actionTypeId.category: Source actions are allowed only in the first stage; move this action there",
    ),
    (
        "non-source-in-source-stage",
        pipe(stage("Source", git(), cmd("Lint")), stage("Build", cmd())),
        "pipeline.yaml: stages[0].actions[1].actionTypeId.category: the first stage holds Source actions, "
        "so it may hold only Source actions; move 'Lint' to a later stage",
    ),
    # artifacts
    (
        "input-not-produced",
        two(cmd(inputArtifacts=[{"name": "BuildOutput"}])),
        "pipeline.yaml: stages[1].actions[0].inputArtifacts[0]: "
        "artifact 'BuildOutput' is not produced by an earlier action",
    ),
    (
        "input-same-stage-same-runorder",
        two(cmd("A", outputArtifacts=BIN), cmd("B", inputArtifacts=BIN)),
        "pipeline.yaml: stages[1].actions[1].inputArtifacts[0]: artifact 'Bin' is not produced by an earlier "
        "action; stages[1].actions[0] produces it with runOrder 1: give this action a higher runOrder",
    ),
    (
        "input-produced-in-later-stage",
        pipe(stage("Source", git()), stage("Test", cmd(inputArtifacts=BIN)), stage("Build", cmd(outputArtifacts=BIN))),
        f"{A}.inputArtifacts[0]: artifact 'Bin' is not produced by an earlier action; "
        "stages[2].actions[0] produces it in a later stage",
    ),
    (
        "input-is-own-output",
        two(cmd(inputArtifacts=BIN, outputArtifacts=BIN)),
        f"{A}.inputArtifacts[0]: artifact 'Bin' is not produced by an earlier action; "
        "an action cannot take its own output artifact as input",
    ),
    (
        "duplicate-output-artifact",
        two(cmd(outputArtifacts=[{"name": "Code"}])),
        f"{A}.outputArtifacts[0].name: artifact 'Code' is already produced by stages[0].actions[0]; "
        "output artifact names must be unique in the pipeline",
    ),
    # namespaces and variable references
    (
        "duplicate-namespace",
        two(cmd(namespace="Src")),
        f"{A}.namespace: namespace 'Src' is already used by stages[0].actions[0]; "
        "namespaces must be unique in the pipeline",
    ),
    (
        "namespace-equals-artifact",
        two(cmd(namespace="Code")),
        f"{A}.namespace: namespace 'Code' equals an artifact name; choose another",
    ),
    (
        "namespace-reserved",
        two(cmd(namespace="variables")),
        f"{A}.namespace: namespace 'variables' is reserved; choose another",
    ),
    (
        "undeclared-pipeline-variable",
        two(cmd("Make", "echo #{variables.Missing}"), variables=[{"name": "Env"}]),
        f"{A}.commands[0]: '#{{variables.Missing}}': pipeline variable 'Missing' is not declared in 'variables'",
    ),
    (
        "unknown-namespace",
        two(cmd("Make", "echo #{Nope.X}")),
        f"{A}.commands[0]: '#{{Nope.X}}': no action has namespace 'Nope'",
    ),
    (
        "namespace-of-later-action",
        two(cmd("A", "echo #{Late.V}"), cmd("B", namespace="Late", outputVariables=["V"])),
        f"{A}.commands[0]: '#{{Late.V}}': namespace 'Late' belongs to an action that does not run earlier "
        "than this one; reference only actions of earlier stages or of a lower runOrder",
    ),
    (
        "key-not-in-outputVariables",
        pipe(
            stage("Source", git()),
            stage("Build", cmd(namespace="Build", outputVariables=["VERSION"])),
            stage("Deploy", cmd("Ship", environmentVariables=[{"name": "V", "value": "#{Build.VERSIN}"}])),
        ),
        "pipeline.yaml: stages[2].actions[0].environmentVariables[0].value: '#{Build.VERSIN}': "
        "action 'Make' does not export 'VERSIN' (it exports: VERSION)",
    ),
    (
        "key-not-a-git-variable",
        two(cmd("Make", "echo #{Src.Sha}")),
        f"{A}.commands[0]: '#{{Src.Sha}}': action 'Checkout' does not export 'Sha' (it exports: {GIT_EXPORTS})",
    ),
    (
        "codepipeline-bogus",
        two(cmd("Make", "echo #{codepipeline.Bogus}")),
        f"{A}.commands[0]: '#{{codepipeline.Bogus}}': codepipeline has only PipelineExecutionId, PipelineName",
    ),
    # field rules (pydantic's), made readable
    ("runorder-0", two(cmd(runOrder=0)), f"{A}.runOrder: input should be greater than or equal to 1 (got 0)"),
    ("runorder-1000", two(cmd(runOrder=1000)), f"{A}.runOrder: input should be less than or equal to 999 (got 1000)"),
    ("unknown-field-typo", two(cmd(runorder=2)), f"{A}.runorder: unknown field 'runorder': did you mean 'runOrder'?"),
    ("missing-name", {"stages": [stage("Build", cmd())]}, "pipeline.yaml: name: required field is missing"),
    (
        "bad-pipeline-name",
        pipe(stage("Build", cmd()), name="my pipeline!"),
        "pipeline.yaml: name: 'my pipeline!' is not allowed: must match ^[A-Za-z0-9.@\\-_]+$",
    ),
    (
        "timeout-4-minutes",
        two(manual(timeoutInMinutes=4)),
        f"{A}.timeoutInMinutes: input should be greater than or equal to 5 (got 4)",
    ),
    (
        "16-output-variables",
        two(cmd(outputVariables=[f"V{i}" for i in range(16)])),
        f"{A}.outputVariables: has 16 items; at most 15 are allowed",
    ),
    (
        "51-commands",
        two(cmd("Make", *[f"echo {i}" for i in range(51)])),
        f"{A}.commands: has 51 items; at most 50 are allowed",
    ),
    (
        "provider-not-a-string",
        two({"name": "Make", "provider": 3}),
        f"{A}.actionTypeId.provider: input should be a valid string (got 3)",
    ),
    # providers
    (
        "unsupported-provider",
        two({"name": "Compile", "provider": "Jenkins", "configuration": {"ProjectName": "orders"}}),
        f"{A}.actionTypeId.provider: provider 'Jenkins' (Build) is not supported by Conveyor yet; "
        f"supported providers: {SUPPORTED}",
    ),
    (
        "misspelt-provider",
        two({"name": "Compile", "provider": "Comands", "commands": ["make"]}),
        f"{A}.actionTypeId.provider: provider 'Comands' (Build) is not supported by Conveyor yet; "
        f"did you mean 'Commands'? supported providers: {SUPPORTED}",
    ),
    (
        "unclosed-reference",
        two(cmd("Make", "echo #{Src.CommitId")),
        f"{A}.commands[0]: '#{{Src.CommitId' is not a variable reference: write #{{namespace.key}} "
        "(letters, digits, @ - _), closed with '}'",
    ),
    (
        "reference-without-key",
        two(cmd("Make", "echo #{CommitId} done")),
        f"{A}.commands[0]: '#{{CommitId}}' is not a variable reference: write #{{namespace.key}} "
        "(letters, digits, @ - _), closed with '}'",
    ),
    (
        "manual-as-build",
        two(manual(category="Build")),
        f"{A}.actionTypeId.category: provider 'Manual' cannot have category 'Build'; use Approval",
    ),
    (
        "manual-unknown-configuration-key",
        two(manual(configuration={"Approvers": "alice"})),
        f"{A}.configuration.Approvers: 'Approvers' is not a configuration key of provider 'Manual'; "
        "allowed: CustomData, ExternalEntityLink, NotificationArn",
    ),
    (
        "approver-of-unknown-kind",
        two(manual(conveyor={"approval": {"approvers": ["alice", "team:releasers"]}})),
        f"{A}.conveyor.approval.approvers[1]: 'team:' is not an approver kind; use a named identity (no prefix) "
        "or one of 'slack:', 'slack-group:', 'email:', 'github:'",
    ),
    (
        "approver-slack-display-name",
        two(manual(conveyor={"approval": {"approvers": ["slack:alice"]}})),
        f"{A}.conveyor.approval.approvers[0]: 'slack:alice' is not a Slack user id, e.g. 'slack:U0123ABCD' "
        "or 'slack:T0123/U0123ABCD'",
    ),
    (
        "approver-bad-email",
        two(manual(conveyor={"approval": {"approvers": ["email:alice"]}})),
        f"{A}.conveyor.approval.approvers[0]: 'email:alice' is not an email address, e.g. 'email:alice@example.com'",
    ),
    (
        "approval-quorum-larger-than-the-approvers",
        two(manual(conveyor={"approval": {"approvers": ["alice", "bob"], "quorum": 3}})),
        f"{A}.conveyor.approval.quorum: a quorum of 3 needs at least 3 approvers; 2 are listed",
    ),
    (
        "approval-slack-channel-name",
        two(manual(conveyor={"approval": {"slackChannel": "#releases"}})),
        f"{A}.conveyor.approval.slackChannel: '#releases' is not a Slack channel id; use the id (e.g. C0123ABCD, "
        "in the channel's details), not its name",
    ),
    (
        "git-without-repository-url",
        pipe(stage("Source", git(configuration={"BranchName": "main"})), stage("Build", cmd())),
        "pipeline.yaml: stages[0].actions[0].configuration: provider 'Git' needs configuration key 'RepositoryUrl'",
    ),
    (
        "commands-without-commands",
        two({"name": "Make", "provider": "Commands"}),
        f"{A}.commands: a 'Commands' action needs 1 to 50 commands",
    ),
    (
        "manual-with-commands",
        two(manual(commands=["echo hi"])),
        f"{A}.commands: provider 'Manual' does not run commands",
    ),
    (
        "manual-with-input-artifacts",
        two(manual(inputArtifacts=[{"name": "Code"}])),
        f"{A}.inputArtifacts: provider 'Manual' takes no input artifacts",
    ),
    (
        "manual-with-output-artifacts",
        two(manual(outputArtifacts=[{"name": "Approved"}])),
        f"{A}.outputArtifacts: provider 'Manual' produces no output artifacts; remove 'outputArtifacts'",
    ),
    (
        "secrets-manager-variable",
        two(cmd(environmentVariables=[{"name": "TOKEN", "value": "prod/token", "type": "SECRETS_MANAGER"}])),
        f"{A}.environmentVariables[0].type: SECRETS_MANAGER variables are not supported yet; "
        "use 'conveyor.passEnvironment' to pass a secret from the worker's environment",
    ),
    # failure handling and conditions
    (
        "rollback-of-source-stage",
        pipe(stage("Source", git(), onFailure=ROLLBACK), stage("Deploy", cmd())),
        "pipeline.yaml: stages[0].onFailure.result: ROLLBACK is not available for the Source stage; use FAIL or RETRY",
    ),
    (
        "before-entry-rollback",
        pipe(
            stage("Source", git()), stage("Deploy", cmd(), beforeEntry={"conditions": [ROLLBACK | {"rules": [WINDOW]}]})
        ),
        "pipeline.yaml: stages[1].beforeEntry.conditions[0].result: "
        "'ROLLBACK' is not a result of a beforeEntry condition; use FAIL or SKIP",
    ),
    # triggers
    (
        "trigger-not-a-source-action",
        two(cmd(), triggers=trigger("Make")),
        "pipeline.yaml: triggers[0].gitConfiguration.sourceActionName: "
        "'Make' is not a Source action of the first stage; Source actions: Checkout",
    ),
    (
        "push-filter-tags-and-branches",
        two(cmd(), triggers=trigger(push=[{"tags": {"includes": ["v*"]}, "branches": {"includes": ["main"]}}])),
        "pipeline.yaml: triggers[0].gitConfiguration.push[0]: "
        "a push filter cannot combine 'tags' with 'branches' or 'filePaths'; split it in two",
    ),
    (
        "pull-request-unknown-event",
        two(cmd(), triggers=trigger(pullRequest=[{"events": ["OPEN", "MERGED"]}])),
        "pipeline.yaml: triggers[0].gitConfiguration.pullRequest[0].events[1]: "
        "'MERGED' is not a pull request event; use OPEN, UPDATED or CLOSED",
    ),
    # pipeline-wide
    (
        "more-than-500-actions",
        many_actions(stages=11, per_stage=50),
        "pipeline.yaml: stages: 550 actions in the pipeline; at most 500 are allowed",
    ),
    (
        "pipeline-variable-declared-twice",
        two(cmd(), variables=[{"name": "Env"}, {"name": "Region"}, {"name": "Env"}]),
        "pipeline.yaml: variables[2].name: pipeline variable 'Env' is declared twice (also variables[0]); remove one",
    ),
]


@pytest.mark.parametrize(("declaration", "expected"), [pytest.param(d, e, id=i) for i, d, e in BROKEN])
def test_broken_declaration_is_reported_exactly(declaration: dict[str, Any], expected: str) -> None:
    report = validate_pipeline(declaration)
    own = [issue.render(SOURCE) for issue in report.errors if NOT_YET not in issue.message]
    assert own == [expected]
    assert not report.ok


NOT_YET = "is not supported by this version of Conveyor yet"


def test_declared_behaviour_that_does_not_run_yet_is_refused_not_skipped() -> None:
    lambda_rule = {"name": "Alarm", "ruleTypeId": {"provider": "JenkinsJob"}, "configuration": {"Job": "f"}}
    declaration = pipe(
        stage("Source", git()),
        stage("Deploy", cmd(), beforeEntry={"conditions": [{"result": "FAIL", "rules": [WINDOW, lambda_rule]}]}),
        triggers=trigger(pullRequest=[{"events": ["OPEN"], "filePaths": {"includes": ["src/**"]}}]),
    )
    report = validate_pipeline(declaration)
    assert [issue.render(SOURCE) for issue in report.errors] == [
        f"{SOURCE}: stages[1].beforeEntry.conditions[0].rules[1].ruleTypeId.provider: rule 'JenkinsJob' "
        f"{NOT_YET}; supported: DeploymentWindow, VariableCheck, Commands, LambdaInvoke, CloudWatchAlarm",
        f"{SOURCE}: triggers[0].gitConfiguration.pullRequest[0].filePaths: pull request file path filters "
        f"{NOT_YET} (webhook payloads do not list a pull request's files)",
    ]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"Cron": "0 9 * * 1-5"}, "configuration.Cron: '0 9 * * 1-5' has 5 fields; a Quartz cron has 6 or 7"),
        ({"Cron": "0 0 9 L * ?"}, "configuration.Cron: day-of-month: 'L' uses L, W or # (not supported)"),
        ({"Cron": "* * 9 ? * MON", "Zone": "x"}, "configuration.Zone: 'Zone' is not a configuration key"),
        ({}, "configuration: a DeploymentWindow rule needs configuration key 'Cron'"),
    ],
)
def test_deployment_window_rules_are_checked(rule: dict[str, str], expected: str) -> None:
    window = WINDOW | {"configuration": rule}
    report = validate_pipeline(
        pipe(
            stage("Source", git()),
            stage("Deploy", cmd(), beforeEntry={"conditions": [{"result": "FAIL", "rules": [window]}]}),
        )
    )
    assert len(report.errors) == 1
    assert (
        report.errors[0].render(SOURCE).startswith(f"{SOURCE}: stages[1].beforeEntry.conditions[0].rules[0].{expected}")
    )


def matches_check(pattern: str) -> dict[str, Any]:
    configuration = {"Variable": "#{Src.BranchName}", "Operator": "MATCHES", "Value": pattern}
    return {"name": "Branch", "ruleTypeId": {"provider": "VariableCheck"}, "configuration": configuration}


RULE_PATH = "pipeline.json: stages[1].beforeEntry.conditions[0].rules[0].configuration"


# What would only have failed the execution once it reached the stage (issue 12): `conveyor validate`
# refuses it, with the same time-zone database and regular expression engine the rules run with.
@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        pytest.param(
            WINDOW | {"configuration": {"Cron": "* * 9-17 ? * MON-FRI", "TimeZone": "Mars/Olympus"}},
            f"{RULE_PATH}.TimeZone: unknown time zone 'Mars/Olympus': use an IANA time zone name, "
            "e.g. 'Europe/Paris', 'America/New_York' or 'UTC'",
            id="unknown-time-zone",
        ),
        pytest.param(
            WINDOW | {"configuration": {"Cron": "* * 9-17 ? * MON-FRI", "TimeZone": "../../etc/passwd"}},
            f"{RULE_PATH}.TimeZone: unknown time zone '../../etc/passwd': use an IANA time zone name, "
            "e.g. 'Europe/Paris', 'America/New_York' or 'UTC'",
            id="time-zone-path",
        ),
        pytest.param(
            matches_check("^release/(v[0-9]+"),
            f"{RULE_PATH}.Value: invalid regular expression '^release/(v[0-9]+': missing ): ^release/(v[0-9]+ "
            "(MATCHES takes RE2 syntax)",
            id="regex-syntax",
        ),
        pytest.param(
            matches_check("^release/(?!hotfix)"),  # Python's re accepts a lookahead; RE2, which runs it, does not
            f"{RULE_PATH}.Value: invalid regular expression '^release/(?!hotfix)': invalid perl operator: (?! "
            "(MATCHES takes RE2 syntax)",
            id="regex-not-re2",
        ),
        pytest.param(
            WINDOW | {"configuration": {"Cron": "* * 9-17 30 FEB ?"}},
            f"{RULE_PATH}.Cron: day-of-month '30' never falls in month 'FEB': the window would never open",
            id="cron-never-opens",
        ),
    ],
)
def test_rule_values_known_before_running_are_refused(rule: dict[str, Any], expected: str, tmp_path: Path) -> None:
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(pipe(stage("Source", git()), stage("Deploy", cmd(), beforeEntry=gate(rule)))))
    report = validate_file(path)  # what `conveyor validate`, `start` and `apply` run
    assert [issue.render(str(path)) for issue in report.errors] == [expected.replace("pipeline.json", str(path))]


def gate(*rules: dict[str, Any], result: str = "FAIL") -> dict[str, Any]:
    return {"conditions": [{"result": result, "rules": list(rules)}]}


def test_rule_values_from_variables_are_checked_when_the_rule_runs() -> None:
    """A reference is resolved only at run time: validation lets it through (the rule errors then)."""
    window = WINDOW | {"configuration": {"Cron": "* * 9-17 ? * MON-FRI", "TimeZone": "#{variables.Zone}"}}
    declaration = pipe(
        stage("Source", git()),
        stage("Deploy", cmd(), beforeEntry=gate(window, matches_check("#{variables.Pattern}"))),
        variables=[{"name": "Zone"}, {"name": "Pattern"}],
    )
    assert validate_declaration(declaration).errors == []


def test_rule_references_are_checked_like_an_actions() -> None:
    """An unresolvable reference in a rule once errored its rule only at run time (and, under SKIP,
    silently skipped the stage before issue 12)."""
    check = {
        "name": "Check",
        "ruleTypeId": {"provider": "VariableCheck"},
        "configuration": {"Variable": "#{Later.V}", "Operator": "EQ", "Value": "#{variables.Nope}"},
    }
    declaration = pipe(
        stage("Source", git()),
        stage("Deploy", cmd("Ship", namespace="Later", outputVariables=["V"]), beforeEntry=gate(check, result="SKIP")),
        stage("Verify", cmd(), onSuccess=gate(check | {"configuration": check["configuration"] | {"Value": "x"}})),
    )
    where = f"{SOURCE}: stages[1].beforeEntry.conditions[0].rules[0].configuration"
    assert errors_of(declaration) == [
        f"{where}.Variable: '#{{Later.V}}': namespace 'Later' belongs to an action that does not run earlier "
        "than this one; reference only actions of earlier stages or of a lower runOrder",
        f"{where}.Value: '#{{variables.Nope}}': pipeline variable 'Nope' is not declared in 'variables'",
    ]


def test_workflow_validation_reads_nothing_from_the_machine() -> None:
    """The workflows' own validation stays pure: a time zone is the worker's to check, when the rule runs."""
    window = WINDOW | {"configuration": {"Cron": "* * 9-17 ? * MON-FRI", "TimeZone": "Mars/Olympus"}}
    declaration = pipe(stage("Source", git()), stage("Deploy", cmd(), beforeEntry=gate(window)))
    assert validate_pipeline(declaration).ok
    assert not validate_declaration(declaration).ok
    with pytest.raises(DeclarationError, match="unknown time zone 'Mars/Olympus'"):
        parse_pipeline(declaration, SOURCE)


def test_later_actions_must_not_depend_on_a_stage_that_may_be_skipped() -> None:
    declaration = pipe(
        stage("Source", git()),
        stage(
            "Optional",
            cmd("Make", "true", namespace="Opt", outputVariables=["V"], outputArtifacts=[{"name": "Extra"}]),
            onFailure={"result": "SKIP"},
        ),
        stage("Deploy", cmd("Ship", "echo #{Opt.V}", inputArtifacts=[{"name": "Extra"}])),
    )
    report = validate_pipeline(declaration)
    assert [issue.render(SOURCE) for issue in report.errors] == [
        f"{SOURCE}: stages[2].actions[0].inputArtifacts[0]: artifact 'Extra' comes from stage 'Optional', "
        "which may be skipped (onFailure: SKIP); produce it elsewhere or use FAIL",
        f"{SOURCE}: stages[2].actions[0].commands[0]: '#{{Opt.V}}' comes from stage 'Optional', "
        "which may be skipped (onFailure: SKIP); use FAIL, or do not depend on it",
    ]


def test_500_actions_are_allowed() -> None:
    report = validate_pipeline(many_actions(stages=10, per_stage=50))
    assert report.errors == []


def test_valid_baseline_has_no_errors() -> None:
    """The builders' baseline is valid, so each case above fails for its own reason only."""
    declaration = two(
        cmd("Make", "echo #{Src.CommitId} #{variables.Env} #{codepipeline.PipelineExecutionId}", namespace="Build"),
        cmd("Ship", "echo #{Build.V}", runOrder=2),
        variables=[{"name": "Env"}],
        triggers=trigger(pullRequest=[{"events": ["OPEN", "UPDATED", "CLOSED"]}]),
    )
    declaration["stages"][1]["actions"][0]["outputVariables"] = ["V"]
    report = validate_pipeline(declaration)
    assert report.ok, report.errors
    assert report.warnings == []


# --- every problem at once -------------------------------------------------------------------------


def test_all_structural_errors_are_reported_at_once() -> None:
    declaration = pipe(
        stage("Source", git()),
        stage("Build", {"name": "Compile", "provider": "Jenkins"}),
        stage("Build", cmd("Ship", "echo #{variables.Nope}")),
    )
    assert errors_of(declaration) == [
        "pipeline.yaml: stages[2].name: stage name 'Build' is already used by stages[1]; stage names must be unique",
        f"{A}.actionTypeId.provider: provider 'Jenkins' (Build) is not supported by Conveyor yet; "
        f"supported providers: {SUPPORTED}",
        "pipeline.yaml: stages[2].actions[0].commands[0]: '#{variables.Nope}': "
        "pipeline variable 'Nope' is not declared in 'variables'",
    ]


def test_all_field_errors_are_reported_at_once() -> None:
    declaration = {"stages": [stage("Build", cmd(runOrder=0), cmd("Other", runorder=2))]}
    assert errors_of(declaration) == [
        "pipeline.yaml: name: required field is missing",
        "pipeline.yaml: stages[0].actions[0].runOrder: input should be greater than or equal to 1 (got 0)",
        "pipeline.yaml: stages[0].actions[1].runorder: unknown field 'runorder': did you mean 'runOrder'?",
    ]


def test_parse_pipeline_raises_one_line_per_issue() -> None:
    declaration = two(cmd(namespace="variables", runOrder=2), cmd("Make", "echo #{Nope.X}"))
    with pytest.raises(DeclarationError) as caught:
        parse_pipeline(declaration, "release.yaml")
    lines = str(caught.value).splitlines()
    assert len(lines) == len(caught.value.issues) == 3
    assert all(line.startswith("release.yaml: stages[1].actions[") for line in lines)


# --- warnings are not errors ------------------------------------------------------------------------


def test_single_stage_without_source_only_warns() -> None:
    report = validate_pipeline(pipe(stage("Build", cmd())))
    assert report.ok
    assert report.errors == []
    assert [w.render(SOURCE) for w in report.warnings] == [
        "pipeline.yaml: stages[0]: no Source stage: CodePipeline requires one; Conveyor runs without it",
        "pipeline.yaml: stages: CodePipeline requires at least 2 stages; Conveyor runs 1",
    ]


def test_source_stage_and_two_stages_give_no_warnings() -> None:
    report = validate_pipeline(two(cmd()))
    assert report.ok and report.warnings == []


# --- loading files --------------------------------------------------------------------------------


def test_get_pipeline_output_loads_and_validates() -> None:
    path = DATA / "get-pipeline.json"
    assert set(json.loads(path.read_text())) == {"pipeline", "metadata"}
    pipeline, snapshot = load_pipeline(path)
    assert pipeline.name == "orders-service"
    assert pipeline.version == 7 and pipeline.pipeline_type == "V2"
    assert pipeline.artifact_store is not None and pipeline.artifact_store.type == "S3"
    assert [s.name for s in pipeline.stages] == ["Source", "Build", "Release"]
    assert snapshot["stages"][1]["actions"][0]["actionTypeId"]["provider"] == "Commands"
    assert "metadata" not in snapshot
    assert validate_file(path).warnings == []


def test_shorthand_provider_yields_canonical_action_type_id() -> None:
    pipeline = parse_pipeline(pipe(stage("Build", cmd())), SOURCE)
    dumped = pipeline.model_dump(mode="json")["stages"][0]["actions"][0]
    assert dumped["actionTypeId"] == {"category": "Compute", "owner": "AWS", "provider": "Commands", "version": "1"}
    assert "provider" not in dumped


def test_shorthand_and_action_type_id_together_are_refused() -> None:
    action = cmd(actionTypeId={"category": "Compute", "owner": "AWS", "provider": "Commands"})
    assert errors_of(pipe(stage("Build", action))) == [
        f"pipeline.yaml: stages[0].actions[0].provider: unknown field 'provider': {UNKNOWN_FIELD}"
    ]


def read_error(path: Path) -> str:
    with pytest.raises(DeclarationError) as caught:
        validate_file(path)
    return str(caught.value)


def test_yaml_syntax_error_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text("name: demo\nstages:\n  - name: Build\n    actions: [\n      - x\n")
    assert read_error(path) == f"{path}: line 5: invalid YAML: expected the node content, but found '-'"


def test_json_syntax_error_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.json"
    path.write_text('{\n  "name": "demo",\n  "stages": [\n    {"name": "Build",}\n  ]\n}\n')
    assert read_error(path) == f"{path}: line 4: invalid JSON: Expecting property name enclosed in double quotes"


def test_duplicate_yaml_key_is_refused_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text("name: demo\nstages:\n  - name: Build\n    actions: []\n    name: Deploy\n")
    assert read_error(path) == (
        f"{path}: line 5: key 'name' is given twice in one mapping (first on line 3); "
        "keep one: YAML would silently use the last"
    )


def test_yaml_merge_key_override_is_not_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text("defaults: &d {a: 1, b: 2}\nx:\n  <<: *d\n  a: 3\n")
    assert read_declaration(path)["x"] == {"a": 3, "b": 2}


def test_duplicate_json_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.json"
    path.write_text('{"name": "demo", "stages": [], "name": "other"}')
    assert read_error(path) == f"{path}: key 'name' is given twice in one object; keep one: JSON would use the last"


def test_invalid_utf8_is_reported_by_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_bytes(b"name: demo\nstages:\n  - name: \xff\xfe\n")
    assert read_error(path) == f"{path}: line 3, column 11: byte 0xff is not valid UTF-8; save the file as UTF-8"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert read_error(path) == f"{path}: file not found"


@pytest.mark.parametrize(
    "text", ["- name: demo\n- stages: []\n", "", "just a string\n"], ids=["list", "empty", "scalar"]
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    report = validate_file(path)
    assert [i.render(SOURCE) for i in report.errors] == [
        "pipeline.yaml: the declaration must be a mapping with 'name' and 'stages'"
    ]


LOST = "was read as a YAML comment (' #' starts one); quote the whole value, e.g. - 'echo \"#{...}\"'"
HEAD = "name: demo\nvariables: [{name: X}]\nstages:\n  - name: Build\n    actions:\n      - name: Make\n"


def test_unquoted_reference_read_as_comment_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        HEAD
        + "        provider: Commands\n"  # line 7
        + "        commands:\n"  # line 8
        + "          - echo #{variables.X}\n"  # line 9: YAML reads `echo`
        + "          - #{variables.X}\n"  # line 10: YAML reads null
    )
    assert [i.render(SOURCE) for i in validate_file(path).errors] == [
        f"pipeline.yaml: line 9: '#{{variables.X}}' {LOST}",
        f"pipeline.yaml: line 10: '#{{variables.X}}' {LOST}",
        "pipeline.yaml: stages[0].actions[0].commands[1]: input should be a valid string (got None)",
    ]
    with pytest.raises(DeclarationError):
        load_pipeline(path)


def test_quoted_and_block_scalar_references_are_not_flagged(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        HEAD
        + "        provider: Commands\n"
        + "        # a whole-line comment may mention #{variables.X}\n"
        + "        commands:\n"
        + "          - echo\n"  # a value equal to the text before ' #' elsewhere must not mislead
        + "          - 'echo #{variables.X}'\n"
        + '          - "echo #{variables.X}"\n'
        + "          - |\n"
        + "            echo #{variables.X}\n"
        + "          - >-\n"
        + "            echo\n"
        + "            #{variables.X}\n"
    )
    report = validate_file(path)
    assert report.errors == []
    commands = report.pipeline.stages[0].actions[0].commands if report.pipeline else None
    assert commands == [
        "echo",
        "echo #{variables.X}",
        "echo #{variables.X}",
        "echo #{variables.X}\n",
        "echo #{variables.X}",
    ]


# --- examples and the JSON Schema -------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_example_validates_without_errors(path: Path) -> None:
    assert isinstance(read_declaration(path), dict)
    report = validate_file(path)
    assert report.ok, [i.render(str(path)) for i in report.errors]


def test_json_schema_accepts_every_example_and_refuses_typos() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in EXAMPLES:
        problems = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert problems == [], f"{path}: {problems}"
    assert list(validator.iter_errors(json.loads((DATA / "get-pipeline.json").read_text())["pipeline"])) == []
    assert list(validator.iter_errors(two(cmd(runorder=2))))  # unknown field
    assert list(validator.iter_errors(two({"name": "Make"})))  # neither provider nor actionTypeId
    # The one rollback rule is documented where editors show it, and a misspelt strategy is refused.
    strategy = schema["$defs"]["PipelineExtension"]["properties"]["rollbackStrategy"]
    assert "never both" in strategy["description"] and "REDEPLOY" in strategy["description"]
    assert list(validator.iter_errors({**two(cmd()), "conveyor": {"rollbackStrategy": "UNDO"}}))


# --- the CLI, as a user runs it ---------------------------------------------------------------------

BAD_FILE = """\
name: demo
stages:
  - name: Source
    actions:
      - name: Checkout
        provider: Git
        configuration: {RepositoryUrl: .}
  - name: Build
    actions:
      - name: Compile
        provider: Jenkins
  - name: Build
    actions:
      - name: Ship
        provider: Commands
        commands: ['echo "#{variables.Nope}"']
"""


Runs = dict[str, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "pipeline.yaml"
    path.write_text(BAD_FILE)
    return path


@pytest.fixture(scope="module")
def cli_runs(bad_file: Path) -> Runs:
    """The three `conveyor` runs, started together so the module stays fast."""
    commands = {
        "bad": ["validate", str(bad_file)],
        "good": ["validate", "examples/hello-release/pipeline.yaml"],
        "schema": ["schema"],
    }
    env = {**os.environ, "COLUMNS": "250"}  # no wrapping of long lines, whatever the terminal
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", "conveyor", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    runs = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=60)
        runs[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return runs


def test_cli_validate_bad_file_lists_every_error(cli_runs: Runs, bad_file: Path) -> None:
    run, path = cli_runs["bad"], bad_file
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert run.stderr.splitlines() == [
        f"{path}: stages[2].name: stage name 'Build' is already used by stages[1]; stage names must be unique",
        f"{path}: stages[1].actions[0].actionTypeId.provider: provider 'Jenkins' (Build) is not supported by "
        f"Conveyor yet; supported providers: {SUPPORTED}",
        f"{path}: stages[2].actions[0].commands[0]: '#{{variables.Nope}}': "
        "pipeline variable 'Nope' is not declared in 'variables'",
    ]


def test_cli_validate_good_file(cli_runs: Runs) -> None:
    run = cli_runs["good"]
    assert run.returncode == 0, run.stderr
    assert run.stdout == "examples/hello-release/pipeline.yaml: valid (3 stages, 6 actions)\n"
    assert "Traceback" not in run.stdout + run.stderr


def test_cli_schema_prints_json_schema(cli_runs: Runs) -> None:
    run = cli_runs["schema"]
    assert run.returncode == 0, run.stderr
    schema = json.loads(run.stdout)
    assert schema["title"] == "Conveyor pipeline declaration"
    assert "stages" in schema["properties"]
    assert schema == json_schema()


# --- accepting what CodePipeline accepts (issue 14) ------------------------------------------------


def noop(name: str = "Tag", **extra: Any) -> dict[str, Any]:
    return {"name": name, "provider": "Noop", **extra}


def github(token: str) -> dict[str, Any]:
    """A GitHub version 1 source as get-pipeline prints it (the provider Conveyor does not run yet)."""
    return {
        "name": "Checkout",
        "actionTypeId": {"category": "Source", "owner": "ThirdParty", "provider": "GitHub", "version": "1"},
        "configuration": {"Owner": "acme", "Repo": "orders", "Branch": "main", "OAuthToken": token},
        "outputArtifacts": [{"name": "Code"}],
    }


def test_booleans_and_numbers_are_read_as_codepipeline_reads_them() -> None:
    declaration = two(
        noop(configuration={"Flag": True, "Off": False, "Count": 1, "Ratio": 1.5, "Text": "1"}),
        cmd(environmentVariables=[{"name": "DEBUG", "value": True}, {"name": "N", "value": 3}]),
    )
    pipeline = parse_pipeline(declaration, SOURCE)
    tag, make = pipeline.stages[1].actions
    assert tag.configuration == {"Flag": "true", "Off": "false", "Count": "1", "Ratio": "1.5", "Text": "1"}
    assert [(e.name, e.value) for e in make.environment_variables] == [("DEBUG", "true"), ("N", "3")]


def test_a_rules_configuration_takes_numbers_too() -> None:
    rule = {"name": "Check", "ruleTypeId": {"provider": "VariableCheck"}}
    rule["configuration"] = {"Variable": "#{variables.N}", "Value": 3, "Operator": "EQ"}
    declaration = two(cmd(), variables=[{"name": "N"}])
    declaration["stages"][1]["beforeEntry"] = {"conditions": [{"result": "FAIL", "rules": [rule]}]}
    pipeline = parse_pipeline(declaration, SOURCE)
    assert pipeline.stages[1].before_entry is not None
    assert pipeline.stages[1].before_entry.conditions[0].rules[0].configuration["Value"] == "3"


def test_a_missing_run_order_is_1_and_an_untyped_environment_variable_is_plaintext() -> None:
    pipeline = parse_pipeline(two(cmd(environmentVariables=[{"name": "STAGE", "value": "prod"}])), SOURCE)
    action = pipeline.stages[1].actions[0]
    assert action.run_order == 1
    assert action.environment_variables[0].type.value == "PLAINTEXT"


def test_a_masked_secret_is_accepted_and_says_it_uses_the_configured_credential() -> None:
    report = validate_pipeline(pipe(stage("Source", github("****")), stage("Build", cmd())))
    assert not [e for e in report.errors if "OAuthToken" in e.path]
    assert [w.render(SOURCE) for w in report.warnings] == [
        "pipeline.yaml: stages[0].actions[0].configuration.OAuthToken: '****' (a secret as get-pipeline prints it) "
        "uses the credential configured for the worker"
    ]


def test_a_literal_secret_is_refused_without_repeating_it() -> None:
    report = validate_pipeline(pipe(stage("Source", github("ghp_0123456789abcdef")), stage("Build", cmd())))
    secret_errors = [e.render(SOURCE) for e in report.errors if "OAuthToken" in e.path]
    assert secret_errors == [
        "pipeline.yaml: stages[0].actions[0].configuration.OAuthToken: 'OAuthToken' holds a literal secret: "
        "a declaration must not; write '****' (or a {{resolve:secretsmanager:...}} reference) and give the "
        "credential to the worker: its environment or its connections configuration (README: Importing "
        "CloudFormation and Terraform, Credentials)"
    ]
    assert "ghp_" not in "\n".join(e.message for e in report.errors)


@pytest.mark.parametrize("token", ["{{resolve:secretsmanager:github:SecretString:token}}", "#{variables.Token}"])
def test_a_secret_named_by_reference_is_accepted(token: str) -> None:
    report = validate_pipeline(
        pipe(stage("Source", github(token)), stage("Build", cmd()), variables=[{"name": "Token"}])
    )
    assert not [e for e in report.errors if "OAuthToken" in e.path]


def test_a_key_the_contract_marks_secret_is_refused_as_a_literal(monkeypatch: pytest.MonkeyPatch) -> None:
    from conveyor.providers.contract import ConfigurationKey
    from conveyor.providers.registry import PROVIDERS

    vault = dataclasses.replace(
        PROVIDERS["Noop"], name="Vault", configuration=(ConfigurationKey("Password", secret=True),)
    )
    monkeypatch.setitem(PROVIDERS, "Vault", vault)  # type: ignore[index]
    action = {"name": "Open", "provider": "Vault", "configuration": {"Password": "hunter2"}}
    assert errors_of(two(action)) == [
        f"{A}.configuration.Password: 'Password' holds a literal secret: a declaration must not; write '****' "
        "(or a {{resolve:secretsmanager:...}} reference) and give the credential to the worker: its environment "
        "or its connections configuration (README: Importing CloudFormation and Terraform, Credentials)"
    ]
    assert errors_of(two({**action, "configuration": {"Password": "****"}})) == []


def test_a_namespace_whose_variables_are_known_at_run_time_takes_any_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """As CodeBuild's exported variables: `#{BuildVariables.ANY}` is valid at declaration time."""
    from conveyor.providers.contract import OutputVariables
    from conveyor.providers.registry import PROVIDERS

    builder = dataclasses.replace(PROVIDERS["Noop"], name="Builder", output_variables=OutputVariables.RUN_TIME)
    monkeypatch.setitem(PROVIDERS, "Builder", builder)  # type: ignore[index]
    declaration = pipe(
        stage("Source", git()),
        stage("Build", {"name": "Compile", "provider": "Builder", "namespace": "BuildVariables"}),
        stage("Deploy", cmd("Ship", "echo #{BuildVariables.IMAGE_TAG}")),
    )
    assert errors_of(declaration) == []
    # Commands lists what it exports: a key it does not list is still refused.
    declaration["stages"][1]["actions"][0] = cmd("Compile", namespace="BuildVariables", outputVariables=["OTHER"])
    assert errors_of(declaration) == [
        "pipeline.yaml: stages[2].actions[0].commands[0]: '#{BuildVariables.IMAGE_TAG}': action 'Compile' does not "
        "export 'IMAGE_TAG' (it exports: OTHER)"
    ]


@pytest.mark.parametrize(
    ("declaration", "expected"),
    [
        (two(cmd(), stagse=[]), "pipeline.yaml: stagse: unknown field 'stagse': did you mean 'stages'?"),
        (
            two(cmd(conveyor={"timeoutMinute": 5})),
            f"{A}.conveyor.timeoutMinute: unknown field 'timeoutMinute': did you mean 'timeoutMinutes'?",
        ),
        (
            two(cmd(inputArtifacts=[{"Name": "Code"}])),
            f"{A}.inputArtifacts[0].Name: unknown field 'Name': did you mean 'name'?",
        ),
        (
            two(cmd(), artifactStores={"us-east-1": {"type": "S3", "location": "b", "encryptionkey": {}}}),
            "pipeline.yaml: artifactStores.us-east-1.encryptionkey: unknown field 'encryptionkey': "
            "did you mean 'encryptionKey'?",
        ),
        (two(cmd(), colour="red"), f"pipeline.yaml: colour: unknown field 'colour': {UNKNOWN_FIELD}"),
    ],
    ids=["top-level", "extension", "artifact", "in-a-mapping", "no-close-name"],
)
def test_unknown_fields_name_what_they_may_have_meant(declaration: dict[str, Any], expected: str) -> None:
    assert expected in errors_of(declaration)


def test_a_buildspec_is_only_for_codebuild_actions() -> None:
    assert errors_of(two(cmd(conveyor={"buildspec": "version: 0.2"}))) == [
        f"{A}.conveyor.buildspec: a buildspec is for 'CodeBuild' actions"
    ]


def test_the_schema_accepts_booleans_and_numbers_where_codepipeline_does() -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(json_schema())
    declaration = two(noop(configuration={"Flag": True, "N": 1}), cmd(environmentVariables=[{"name": "D", "value": 1}]))
    assert list(validator.iter_errors(declaration)) == []
    assert list(validator.iter_errors(two(noop(configuration={"Flag": {"nested": 1}}))))
