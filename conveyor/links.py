"""Where people open an execution or an approval: links into the console, built from CONVEYOR_PUBLIC_URL.

CONVEYOR_PUBLIC_URL is the console's public address (`https://conveyor.example.com/console`, behind the SSO
proxy); Slack messages, Slack notification rules and approval notifications (SNS, webhook) link to its pages.
The paths are the console's own routes (conveyor/console/acting.py and the execution page); every part is
quoted, so a stage or action name with a space or a slash still names one page.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote

PUBLIC_URL_ENV = "CONVEYOR_PUBLIC_URL"


def public_url(environ: Mapping[str, str] = os.environ) -> str | None:
    """The console's public address without a trailing slash, or None when it is not configured."""
    return environ.get(PUBLIC_URL_ENV, "").strip().rstrip("/") or None


def console_path(*parts: str) -> str:
    """A console page's path below the console's root, each part quoted."""
    return "/".join(quote(part, safe="") for part in parts)


def execution_path(pipeline: str, execution_id: str) -> str:
    return console_path("pipelines", pipeline, "executions", execution_id)


def approval_path(pipeline: str, execution_id: str, stage: str, action: str) -> str:
    return console_path("pipelines", pipeline, "executions", execution_id, "approvals", stage, action)


def execution_link(pipeline: str, execution_id: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The execution's console page, or None without CONVEYOR_PUBLIC_URL."""
    base = public_url(environ)
    return f"{base}/{execution_path(pipeline, execution_id)}" if base else None


def approval_link(
    pipeline: str, execution_id: str, stage: str, action: str, environ: Mapping[str, str] = os.environ
) -> str | None:
    """The approval's console page (what is asked, Approve / Reject), or None without CONVEYOR_PUBLIC_URL."""
    base = public_url(environ)
    return f"{base}/{approval_path(pipeline, execution_id, stage, action)}" if base else None
