"""Deterministic orchestration: the `PipelineExecution` and `PipelineStage` workflows."""
