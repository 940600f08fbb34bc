"""`resolve_approvers`: who may decide an approval, resolved once, when it opens.

Slack user groups are expanded with `usergroups.users.list`, Slack user ids without their workspace get
it from `users.info`, and every name is joined with the other names the identity directory gives the
same person. The stage workflow keeps the result, so its update validator decides from a snapshot and
a later change of a group does not change who may decide an approval already waiting.
"""

from __future__ import annotations

from typing import Any

import structlog
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity
from temporalio.exceptions import ApplicationError

from conveyor.identities import IdentityDirectory, load_directory, normalize
from conveyor.interface import (
    Activity,
)
from conveyor.model import ApproverQuery, ApproverSnapshot
from conveyor.slack.web import BOT_TOKEN_ENV, web_client
from conveyor.spec.validation import DeclarationError

log = structlog.get_logger("conveyor.approvers")
# Slack answers that mean "this entry names nobody", as opposed to an outage worth a retry.
_NOT_FOUND = {"user_not_found", "no_such_subteam", "subteam_not_found", "invalid_users"}


@activity.defn(name=Activity.RESOLVE_APPROVERS)
async def resolve_approvers(query: ApproverQuery) -> ApproverSnapshot:
    try:
        directory = load_directory()
    except DeclarationError as err:
        raise ApplicationError(str(err), type="ConfigurationError", non_retryable=True) from None
    resolver = _Resolver(directory, web_client())
    people: list[frozenset[str]] = []
    for entry in query.approvers:
        people += await resolver.people(entry)
    allowed = set().union(*people) if people else set()
    excluded = set().union(*(directory.closure(name) for name in query.excluded if name))
    snapshot = ApproverSnapshot(
        allowed=sorted(allowed),
        excluded=sorted(excluded),
        people=len(set(people)),
        problems=resolver.problems,
    )
    log.info("approvers.resolved", people=snapshot.people, problems=len(snapshot.problems))
    return snapshot


class _Resolver:
    def __init__(self, directory: IdentityDirectory, slack: AsyncWebClient | None) -> None:
        self.directory = directory
        self.slack = slack
        self.problems: list[str] = []
        self._teams: dict[str, str] = {}

    async def people(self, entry: str) -> list[frozenset[str]]:
        """The people an entry names, each as the set of their principal names."""
        kind, _, value = entry.partition(":")
        if kind == "slack-group":
            members = await self._call(entry, "usergroups_users_list", usergroup=value)
            users = members.get("users", []) if members else []
            if members is not None and not users:
                self.problems.append(f"{entry}: the group has no members")
            return [p for user in users if (p := await self._slack_user(entry, user))]
        if kind == "slack" and "/" not in value:
            person = await self._slack_user(entry, value)
            return [person] if person else []
        return [frozenset(self.directory.closure(normalize(entry)))]

    async def _slack_user(self, entry: str, user: str) -> frozenset[str] | None:
        team = self._teams.get(user)
        if team is None:
            found = await self._call(entry, "users_info", user=user)
            if found is None:
                return None
            team = self._teams[user] = str(found["user"].get("team_id") or "")
        return frozenset(self.directory.closure(f"slack:{team}/{user}"))

    async def _call(self, entry: str, method: str, **params: str) -> dict[str, Any] | None:
        """A Web API call; None (and a problem noted) when Slack says the entry names nobody."""
        if self.slack is None:
            self.problems.append(f"{entry}: the worker has no {BOT_TOKEN_ENV} to ask Slack who this is")
            return None
        try:
            response = await getattr(self.slack, method)(**params)
        except SlackApiError as err:
            code = err.response.get("error", "")
            if code in _NOT_FOUND:
                self.problems.append(f"{entry}: Slack says {code}")
                return None
            raise ApplicationError(f"Slack {method} failed for {entry}: {code}", type="SlackError") from None
        except (SlackClientError, OSError) as err:  # an outage: retried by Temporal
            raise ApplicationError(f"Slack {method} failed for {entry}: {err}", type="SlackError") from None
        return dict(response.data) if isinstance(response.data, dict) else None
