"""The web console of `conveyor serve`: pipelines, executions and approvals in a browser."""
