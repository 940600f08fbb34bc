# The orders service's pipeline, as a Terraform module writes it.

variable "github_owner" {
  type    = string
  default = "acme"
}

variable "branch" {
  type    = string
  default = "main"
}

variable "environment" {
  type        = string
  description = "Where the pipeline deploys"
}

locals {
  name        = "orders"
  repository  = "${var.github_owner}/${local.name}"
  deploy_role = "arn:aws:iam::111122223333:role/orders-deploy"
}

resource "aws_s3_bucket" "artifacts" {
  bucket = "${local.name}-pipeline-artifacts"
}

resource "aws_codestarconnections_connection" "github" {
  name          = "github"
  provider_type = "GitHub"
}

resource "aws_codebuild_project" "test" {
  name         = "${local.name}-test"
  service_role = aws_iam_role.codebuild.arn

  artifacts {
    type = "CODEPIPELINE"
  }

  environment {
    compute_type = "BUILD_GENERAL1_SMALL"
    image        = "aws/codebuild/standard:7.0"
    type         = "LINUX_CONTAINER"

    environment_variable {
      name  = "ENVIRONMENT"
      value = var.environment
    }
  }

  source {
    type      = "CODEPIPELINE"
    buildspec = <<-EOT
      version: 0.2
      phases:
        build:
          commands:
            - make test
            - echo "built $${CODEBUILD_RESOLVED_SOURCE_VERSION}"
    EOT
  }
}

resource "aws_codepipeline" "main" {
  name          = "${local.name}-pipeline"
  role_arn      = aws_iam_role.codepipeline.arn
  pipeline_type = "V2"

  artifact_store {
    location = aws_s3_bucket.artifacts.bucket
    type     = "S3"
  }

  stage {
    name = "Source"

    action {
      name             = "Source"
      category         = "Source"
      owner            = "AWS"
      provider         = "CodeStarSourceConnection"
      version          = "1"
      output_artifacts = ["source_output"]
      namespace        = "SourceVariables"

      configuration = {
        ConnectionArn    = aws_codestarconnections_connection.github.arn
        FullRepositoryId = local.repository
        BranchName       = var.branch
        DetectChanges    = true
      }
    }
  }

  stage {
    name = "Test"

    action {
      name            = "UnitTests"
      category        = "Test"
      owner           = "AWS"
      provider        = "CodeBuild"
      version         = "1"
      input_artifacts = ["source_output"]

      configuration = {
        ProjectName = aws_codebuild_project.test.name
        EnvironmentVariables = jsonencode([
          {
            name  = "COMMIT"
            value = "#{SourceVariables.CommitId}"
            type  = "PLAINTEXT"
          },
          {
            name  = "STAGE"
            value = var.environment
          },
        ])
      }
    }
  }

  stage {
    name = "Approve"

    action {
      name     = "Production"
      category = "Approval"
      owner    = "AWS"
      provider = "Manual"
      version  = "1"

      configuration = {
        CustomData = "Deploy ${local.name} to ${var.environment}?"
      }
    }
  }

  stage {
    name = "Deploy"

    action {
      name            = "Deploy"
      category        = "Deploy"
      owner           = "AWS"
      provider        = "CloudFormation"
      version         = "1"
      input_artifacts = ["source_output"]
      run_order       = 2

      configuration = {
        ActionMode     = "CREATE_UPDATE"
        StackName      = "${local.name}-${var.environment}"
        TemplatePath   = "source_output::template.yaml"
        Capabilities   = "CAPABILITY_IAM"
        RoleArn        = local.deploy_role
        ParameterOverrides = jsonencode({
          Environment = var.environment
        })
      }
    }
  }

  tags = {
    Team = "orders"
  }
}
