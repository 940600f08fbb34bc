"""Slack: the approval request message (Block Kit), the Web API client, and the bolt app that takes clicks."""
