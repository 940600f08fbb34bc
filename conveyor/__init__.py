"""Conveyor: CodePipeline-style release pipelines as durable Temporal workflows."""

__version__ = "0.1.0"
