"""`conveyor import`: CloudFormation (YAML with short-form intrinsics, and JSON) and Terraform pipelines written
the way real repositories write them, into Conveyor's declaration; the report; the command. No server needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conveyor.spec import DeclarationError, validate_declaration
from conveyor.spec.importing import ImportedPipeline, ReportKind, dump_declaration, import_file
from conveyor.spec.loading import validate_file

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "import"
CFN_YAML = DATA / "pipelines.cfn.yaml"
CFN_JSON = DATA / "pipelines.cfn.json"
TERRAFORM = DATA / "pipeline.tf"
UNSUPPORTED = "is not supported by Conveyor yet"


def pipelines(path: Path) -> dict[str, ImportedPipeline]:
    return {p.resource: p for p in import_file(path).pipelines}


def lines(pipeline: ImportedPipeline, kind: ReportKind) -> list[str]:
    return [f"{line.path}: {line.message}" for line in pipeline.of_kind(kind)]


def written(path: Path, resource: str) -> str:
    """The YAML the command writes for one pipeline (its header names the file as given)."""
    imported = pipelines(path)[resource]
    result = import_file(path)
    header = (
        f"Imported by `conveyor import` from {path.relative_to(ROOT)} ({result.source_format} {imported.resource}).\n"
        "Check what the import report marked for attention before running it."
    )
    return dump_declaration(imported.declaration, header)


# --- the mapping -----------------------------------------------------------------------------------------


def test_a_cloudformation_pipeline_maps_to_the_expected_yaml() -> None:
    assert written(CFN_YAML, "AppPipeline") == (DATA / "expected" / "orders-app.yaml").read_text()


def test_a_terraform_pipeline_maps_to_the_expected_yaml() -> None:
    assert written(TERRAFORM, "aws_codepipeline.main") == (DATA / "expected" / "orders-pipeline.yaml").read_text()


def test_the_json_template_maps_exactly_as_the_yaml_one() -> None:
    from_yaml, from_json = pipelines(CFN_YAML), pipelines(CFN_JSON)
    assert list(from_json) == list(from_yaml) == ["AppPipeline", "InfraPipeline"]
    for resource, imported in from_yaml.items():
        assert from_json[resource].declaration == imported.declaration
        # The same report, less the line numbers only YAML has.
        strip = [line.path.split(" (line")[0] + line.message for line in imported.lines]
        assert [line.path + line.message for line in from_json[resource].lines] == strip


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        (CFN_YAML, "AppPipeline"),
        (CFN_YAML, "InfraPipeline"),
        (CFN_JSON, "AppPipeline"),
        (TERRAFORM, "aws_codepipeline.main"),
    ],
)
def test_what_is_written_validates_apart_from_providers_conveyor_does_not_run_yet(path: Path, resource: str) -> None:
    declaration = yaml.safe_load(dump_declaration(pipelines(path)[resource].declaration))
    report = validate_declaration(declaration)
    assert report.pipeline is not None
    assert [e.message for e in report.errors if UNSUPPORTED not in e.message] == []
    assert all(e.path.endswith("actionTypeId.provider") for e in report.errors)


def test_intrinsics_are_evaluated_where_the_template_gives_their_value() -> None:
    app = pipelines(CFN_YAML)["AppPipeline"].declaration
    deploy = app["stages"][3]["actions"][0]["configuration"]
    # !Join of !FindInMap (literal keys) and a parameter; !GetAtt has no static value: a variable.
    assert deploy["StackName"] == "stg-#{variables.GitHubRepo}"
    assert deploy["RoleArn"] == "#{variables.CodePipelineRoleArn}"
    # A !Sub keeps CodePipeline's own #{...} references as they are.
    assert app["stages"][2]["actions"][0]["configuration"]["CustomData"] == (
        "Release #{BuildVariables.IMAGE_TAG} of #{variables.GitHubRepo} to #{variables.Environment}?"
    )
    # Booleans and numbers become CodePipeline's strings; a missing runOrder stays missing (1).
    assert app["stages"][0]["actions"][0]["configuration"]["PollForSourceChanges"] == "false"
    assert app["stages"][0]["actions"][0]["actionTypeId"]["version"] == "1"
    assert "runOrder" not in app["stages"][3]["actions"][0]
    # The pipeline's name cannot be a variable: the parameter's default stands in.
    assert app["name"] == "orders-app"


def test_an_inline_buildspec_is_carried_to_the_codebuild_action_that_names_its_project() -> None:
    app = pipelines(CFN_YAML)["AppPipeline"]
    build = app.declaration["stages"][1]["actions"][0]
    assert build["configuration"]["ProjectName"] == "#{variables.GitHubRepo}-build"  # !Ref of a named project
    assert build["conveyor"]["buildspec"].startswith("version: 0.2\nenv:\n  exported-variables:\n    - IMAGE_TAG\n")
    where = "AppPipeline.stages[1].actions[0]"
    assert lines(app, ReportKind.CODEBUILD) == [
        f"{where}: buildspec carried over from BuildProject",
        f"{where}: image aws/codebuild/standard:7.0",
        f"{where}: environment ENVIRONMENT=!Ref Environment",
        f"{where}: environment ARTIFACT_BUCKET=!Ref ArtifactBucket",
    ]
    infra = pipelines(CFN_YAML)["InfraPipeline"]
    assert "conveyor" not in infra.declaration["stages"][1]["actions"][0]
    assert lines(infra, ReportKind.CODEBUILD) == [
        "InfraPipeline.stages[1].actions[0]: project 'orders-infra-plan' is not defined in this file: "
        "buildspec not carried"
    ]


def test_terraform_references_heredocs_and_jsonencode() -> None:
    main = pipelines(TERRAFORM)["aws_codepipeline.main"].declaration
    source, test = main["stages"][0]["actions"][0], main["stages"][1]["actions"][0]
    assert source["configuration"]["FullRepositoryId"] == "#{variables.github_owner}/orders"  # a local of a var
    assert main["artifactStore"] == {"location": "orders-pipeline-artifacts", "type": "S3"}  # a resource attribute
    assert test["configuration"]["ProjectName"] == "orders-test"
    assert test["configuration"]["EnvironmentVariables"] == (
        '[{"name": "COMMIT", "value": "#{SourceVariables.CommitId}", "type": "PLAINTEXT"}, '
        '{"name": "STAGE", "value": "#{variables.environment}"}]'
    )
    # `$${` is Terraform's escape for a literal `${`; `<<-` strips the indentation.
    assert test["conveyor"]["buildspec"].endswith('      - echo "built ${CODEBUILD_RESOLVED_SOURCE_VERSION}"\n')
    assert test["conveyor"]["buildspec"].startswith("version: 0.2\n")


# --- the report ----------------------------------------------------------------------------------------


def test_the_report_lists_each_variable_with_its_origin_and_default() -> None:
    app = pipelines(CFN_YAML)["AppPipeline"]
    assert [line.split(": ", 1)[1] for line in lines(app, ReportKind.VARIABLE)] == [
        "!Ref GitHubOwner -> #{variables.GitHubOwner} (default 'acme')",
        "!Ref GitHubRepo -> #{variables.GitHubRepo} (default 'orders')",
        "!Ref GitHubBranch -> #{variables.GitHubBranch} (default 'main')",
        "!Ref Environment -> #{variables.Environment} (default 'staging')",
        "!GetAtt CodePipelineRole.Arn -> #{variables.CodePipelineRoleArn} (no default)",
    ]
    assert app.declaration["variables"][0] == {
        "name": "GitHubOwner",
        "defaultValue": "acme",
        "description": "imported from !Ref GitHubOwner",
    }
    main = pipelines(TERRAFORM)["aws_codepipeline.main"]
    assert [line.split(": ", 1)[1] for line in lines(main, ReportKind.VARIABLE)] == [
        "aws_codestarconnections_connection.github.arn -> #{variables.github_arn} (no default)",
        "var.github_owner -> #{variables.github_owner} (default 'acme')",
        "var.branch -> #{variables.branch} (default 'main')",
        "var.environment -> #{variables.environment} (no default)",
    ]


def test_the_report_names_what_needs_attention_with_its_path() -> None:
    attention = lines(pipelines(CFN_YAML)["AppPipeline"], ReportKind.ATTENTION)
    expected = [
        "AppPipeline.RestartExecutionOnUpdate: not mapped: Conveyor does not restart an execution when the "
        "declaration changes",
        "AppPipeline.name (line 85): !Ref GitHubRepo: used its default 'orders' (a variable cannot stand here)",
        "AppPipeline.roleArn: !GetAtt CodePipelineRole.Arn has no value before the pipeline runs: left out; set it",
        "AppPipeline.artifactStore: !Ref ArtifactBucket has no value before the pipeline runs: left out; set it",
        "AppPipeline.stages[0].actions[0].configuration.OAuthToken: a {{resolve:...}} secret reference: the worker "
        "resolves credentials from its own configuration",
    ]
    assert attention[: len(expected)] == expected
    # Every provider of this pipeline (GitHub, CodeBuild, CloudFormation) is supported: nothing else needs attention.
    assert attention[len(expected) :] == []


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


PIPELINE_TEMPLATE = """\
Parameters:
  Token: {Type: String, NoEcho: true}
Resources:
  Pipeline:
    Type: AWS::CodePipeline::Pipeline
    Properties:
      Stages:
        - Name: Source
          Actions:
            - Name: GitHub
              ActionTypeId: {Category: Source, Owner: ThirdParty, Provider: GitHub, Version: 1}
              Configuration:
                OAuthToken: %s
                Repo: !Select [0, !GetAZs '']
              OutputArtifacts: [{Name: Src}]
              Colour: blue
"""


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("!Ref Token", "the secret came from the template's input: written as '****'"),
        ("ghp_literal0123456789", "a literal secret was in the template: written as '****'"),
    ],
)
def test_a_secret_never_reaches_the_declaration(tmp_path: Path, token: str, expected: str) -> None:
    imported = pipelines(write(tmp_path, "t.yaml", PIPELINE_TEMPLATE % token))["Pipeline"]
    configuration = imported.declaration["stages"][0]["actions"][0]["configuration"]
    assert configuration["OAuthToken"] == "****"
    assert "ghp_" not in dump_declaration(imported.declaration)
    assert not [v for v in imported.declaration.get("variables", []) if v["name"] == "Token"]
    assert any(expected in line for line in lines(imported, ReportKind.ATTENTION))


def test_what_cannot_map_is_listed_for_attention(tmp_path: Path) -> None:
    imported = pipelines(write(tmp_path, "t.yaml", PIPELINE_TEMPLATE % "'****'"))["Pipeline"]
    attention = lines(imported, ReportKind.ATTENTION)
    assert "Pipeline.stages[0].actions[0].colour: not an action field Conveyor knows: left out" in attention
    assert (
        "Pipeline.stages[0].actions[0].configuration.Repo (line 14): !Select is not evaluated by conveyor import: "
        "became a variable; check the value"
    ) in attention
    assert imported.declaration["stages"][0]["actions"][0]["configuration"]["Repo"] == "#{variables.Repo}"
    assert imported.name == "Pipeline"  # no Name: the logical id


def test_terraform_count_and_dynamic_blocks_need_attention(tmp_path: Path) -> None:
    text = """
resource "aws_codepipeline" "many" {
  count    = 2
  name     = "app-${count.index}"
  role_arn = "arn:aws:iam::1:role/r"
  stage {
    name = "Source"
    action {
      name     = "S3"
      category = "Source"
      owner    = "AWS"
      provider = "S3"
      version  = "1"
      output_artifacts = ["src"]
      configuration = { S3Bucket = "b", S3ObjectKey = "k.zip", PollForSourceChanges = false }
    }
  }
  dynamic "stage" {
    for_each = var.stages
    content { name = stage.value }
  }
}
"""
    imported = pipelines(write(tmp_path, "main.tf", text))["aws_codepipeline.many"]
    attention = lines(imported, ReportKind.ATTENTION)
    assert "aws_codepipeline.many.count: count: Terraform makes several pipelines of it; imported once" in attention
    assert "aws_codepipeline.many.dynamic.stage: a dynamic block: write its blocks out; not imported" in attention
    assert "aws_codepipeline.many.name: count.index has no value before the pipeline runs: used 'many'" in attention
    assert imported.declaration["stages"][0]["actions"][0]["configuration"]["PollForSourceChanges"] == "false"


def test_get_pipeline_json_is_taken_as_it_is() -> None:
    result = import_file(ROOT / "tests" / "data" / "get-pipeline.json")
    assert result.source_format == "CodePipeline"
    assert result.pipelines[0].declaration["name"] == "orders-service"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.yaml", "Resources:\n  P:\n    Type: [\n", "line 4: invalid YAML"),
        ("bad.json", '{\n  "Resources": {,}\n}\n', "line 2: invalid JSON"),
        ("bad.tf", 'resource "aws_codepipeline" "p" {\n  name = \n}\n', "line 2, column 10: invalid HCL"),
        ("nothing.yaml", "Resources: {}\n", None),
    ],
)
def test_unreadable_files_are_named_with_their_line(tmp_path: Path, name: str, text: str, expected: str | None) -> None:
    path = write(tmp_path, name, text)
    if expected is None:
        assert import_file(path).pipelines == []
        return
    with pytest.raises(DeclarationError) as caught:
        import_file(path)
    assert str(caught.value).startswith(f"{path}: {expected}")


# --- the command ---------------------------------------------------------------------------------------


def conveyor(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_cli_imports_every_pipeline_of_a_file_and_the_output_validates(tmp_path: Path) -> None:
    run = conveyor("import", str(CFN_YAML), "--output-dir", str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders-app.yaml", "orders-infra.yaml"]
    assert f"{CFN_YAML}: AppPipeline -> {tmp_path / 'orders-app.yaml'} (pipeline orders-app)" in run.stdout
    assert "  variable  AppPipeline.stages[0].actions[0].configuration.Owner (line 101): !Ref GitHubOwner" in run.stdout
    report = validate_file(tmp_path / "orders-app.yaml")
    assert report.pipeline is not None
    assert all(UNSUPPORTED in e.message for e in report.errors)
    assert "Traceback" not in run.stderr


def test_cli_writes_one_chosen_pipeline_and_refuses_several_into_one_file(tmp_path: Path) -> None:
    several = conveyor("import", str(CFN_YAML), "-o", str(tmp_path / "one.yaml"))
    assert several.returncode == 2
    assert "holds 2 pipelines (orders-app, orders-infra): use --output-dir, or --pipeline NAME" in several.stderr
    chosen = conveyor("import", str(TERRAFORM), "--pipeline", "main", "-o", "-")
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout == written(TERRAFORM, "aws_codepipeline.main").replace(
        f"from {TERRAFORM.relative_to(ROOT)}", f"from {TERRAFORM}"
    )
    assert "-> standard output (pipeline orders-pipeline)" in chosen.stderr
    missing = conveyor("import", str(TERRAFORM), "--pipeline", "nope")
    assert missing.returncode == 1
    assert "no pipeline named 'nope' (the file holds: orders-pipeline)" in missing.stderr


def test_cli_names_the_file_and_line_of_a_parse_error(tmp_path: Path) -> None:
    path = write(tmp_path, "main.tf", 'resource "aws_codepipeline" "p" {\n  name = \n}\n')
    run = conveyor("import", str(path))
    assert run.returncode == 1
    assert run.stderr.startswith(f"{path}: line 2, column 10: invalid HCL")
    assert "Traceback" not in run.stderr
    empty = conveyor("import", str(write(tmp_path, "empty.yaml", "Resources: {}\n")))
    assert empty.returncode == 1
    assert "no pipeline found in this CloudFormation file" in empty.stderr
