"""The Slack Web API client the worker and the app use (token and API URL from the environment)."""

from __future__ import annotations

import os

from slack_sdk.web.async_client import AsyncWebClient

BOT_TOKEN_ENV = "SLACK_BOT_TOKEN"
API_URL_ENV = "SLACK_API_URL"  # a different Web API endpoint (a proxy, or the tests' fake Slack)
DEFAULT_API_URL = "https://slack.com/api/"


def api_url(configured: str | None = None) -> str:
    """`configured`, else $SLACK_API_URL, else Slack's own."""
    url = configured or os.environ.get(API_URL_ENV) or DEFAULT_API_URL
    return url if url.endswith("/") else url + "/"  # slack_sdk joins method names onto it


def client(token: str, url: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=api_url(url), timeout=10)


def web_client(token_env: str = BOT_TOKEN_ENV) -> AsyncWebClient | None:
    """A client with the bot token from `token_env`, or None when the process has none."""
    token = os.environ.get(token_env)
    return client(token) if token else None
