"""The CodeBuild provider's two runners: `local` (the buildspec on the worker) and `aws` (StartBuild)."""
