"""`conveyor serve`: the one HTTP service (webhooks now; Slack and a console later)."""
