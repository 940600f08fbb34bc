"""Who people are: the identity directory, and the principal names an approval policy matches.

A principal is one name a person is known by:

- a named identity: `alice` (what the directory's keys are, and what `conveyor approve --by` claims);
- `slack:T0001/U0001`: a Slack user, by workspace (`team.id`) and user id, never by display name;
- `email:alice@example.com`: an email address (from the directory, or Slack's profile of the clicker);
- `github:octocat`: a GitHub login (who sent a webhook that started an execution).

An approval policy may also name `slack:U0001` (a Slack user without its workspace) and
`slack-group:S0001` (a Slack user group); both are resolved by an activity when the approval opens.
The directory (a YAML file, `CONVEYOR_IDENTITIES`) ties the names of one person together:

```yaml
identities:
  alice:
    slack: [T0001/U0001]
    emails: [alice@example.com]
    github: [alice-gh]
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from conveyor.model import ApprovalRequest, ApprovalResult
from conveyor.spec.loading import load_model_file

IDENTITIES_ENV = "CONVEYOR_IDENTITIES"
SlackUserRef = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]+/[A-Z0-9]+$")]


class Identity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slack: list[SlackUserRef] = Field(default_factory=list)  # TEAM/USER ids
    emails: list[Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(default_factory=list)
    github: list[str] = Field(default_factory=list)


class IdentityDirectory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identities: dict[Annotated[str, StringConstraints(pattern=r"^[^:\s]+$")], Identity] = Field(default_factory=dict)

    def names_of(self, identity: str) -> set[str]:
        """Every principal of a named identity, itself included."""
        entry = self.identities.get(identity)
        if entry is None:
            return {identity}
        return (
            {identity}
            | {f"slack:{ref}" for ref in entry.slack}
            | {f"email:{email.lower()}" for email in entry.emails}
            | {f"github:{login}" for login in entry.github}
        )

    def identity_for(self, principal: str) -> str | None:
        """The named identity that lists this principal (`slack:T/U`, `email:x`, `github:x`), if any."""
        kind, _, value = principal.partition(":")
        for name, entry in self.identities.items():
            listed = {"slack": entry.slack, "email": [e.lower() for e in entry.emails], "github": entry.github}
            if value in listed.get(kind, []):
                return name
        return None

    def closure(self, principal: str) -> set[str]:
        """A principal, and every other name of the person it belongs to."""
        principal = normalize(principal)
        if principal.split(":", 1)[0] in ("slack", "email", "github"):
            identity = self.identity_for(principal)
            return {principal} | (self.names_of(identity) if identity else set())
        return self.names_of(principal)


def normalize(principal: str) -> str:
    """Emails compare case-insensitively, and a bare address (a Git author's) is an email principal."""
    if principal.startswith("email:"):
        return principal.lower()
    if "@" in principal and ":" not in principal and " " not in principal:
        return f"email:{principal.lower()}"
    return principal


def decider_names(by: str | None, principals: list[str]) -> set[str]:
    """Every name a decider is known by: the claimed identity and the names the channel verified."""
    return {normalize(name) for name in [by or "", *principals] if name}


def allowed_deciders(request: ApprovalRequest) -> list[str]:
    """Who may decide: the snapshot taken when the approval opened (groups and emails resolved), else the
    approvers as listed."""
    return request.allowed if request.allowed is not None else [normalize(a) for a in request.approvers]


def excluded_deciders(request: ApprovalRequest) -> set[str]:
    """Who separation of duties keeps out (the starter, the source revision's authors)."""
    return {normalize(e) for e in request.excluded}


MAX_NAMES_LISTED = 10  # of the people who may still decide an approval


def who_may_decide(request: ApprovalRequest, approved: list[ApprovalResult]) -> str:
    """Who may still decide a waiting approval, in words (`conveyor status`, the console): never someone excluded,
    nor someone whose approval is already counted."""
    if not request.approvers:
        return "anyone with access" + (" except those below" if request.excluded else "")
    excluded = excluded_deciders(request)
    decided = {name for d in approved for name in decider_names(d.by, d.principals)}
    left = [name for name in allowed_deciders(request) if name not in excluded and name not in decided]
    if not left:
        return "nobody left (no approver who has not decided yet is allowed)"
    more = f" and {len(left) - MAX_NAMES_LISTED} more" if len(left) > MAX_NAMES_LISTED else ""
    return ", ".join(left[:MAX_NAMES_LISTED]) + more


def load_directory(path: Path | None = None) -> IdentityDirectory:
    """The directory at `path`, or at $CONVEYOR_IDENTITIES, or an empty one; a bad file is a DeclarationError."""
    if path is None:
        configured = os.environ.get(IDENTITIES_ENV)
        if not configured:
            return IdentityDirectory()
        path = Path(configured)
    return load_model_file(path, IdentityDirectory, missing="identity directory not found")
