"""Who is asking: an SSO proxy's trusted header, a bearer token, or (if allowed) nobody; and what they may do.

Every console request runs `authenticated` (the console app's own dependency); routes then ask for the role
they need with `viewing` or `operating`. Approving is not a role here: the workflow authorizes a decision by the
approval policy, so the approval page only needs `identified` (a known person, never anonymous).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from conveyor.client import ConveyorError
from conveyor.console.config import BearerToken, ConsoleConfig, Role
from conveyor.identities import IdentityDirectory, load_directory, normalize
from conveyor.spec.validation import DeclarationError

ANYONE = "*"  # in viewers/operators: every authenticated person


class Via(StrEnum):
    PROXY = "proxy"
    TOKEN = "token"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Viewer:
    """The person (or script) behind a request, and the console roles they hold."""

    user: str
    roles: frozenset[Role]
    via: Via
    email: str | None = None
    groups: frozenset[str] = frozenset()  # from the trusted proxy's groups header

    def can(self, role: Role) -> bool:
        return role in self.roles

    @property
    def principals(self) -> list[str]:
        """Other verified names, for an approval's separation of duties (as Slack passes `slack:T/U`)."""
        return [f"email:{self.email.lower()}"] if self.email else []


class Refused(Exception):
    """A request the console answers with an error page (401, 403, 400, 404): the message says why and what to do."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


@dataclass(frozen=True)
class ConsoleOptions:
    """The console's settings, resolved at start-up: the tokens' values read from their variables."""

    config: ConsoleConfig
    directory: IdentityDirectory
    tokens: tuple[tuple[bytes, BearerToken], ...]  # (value, token)
    csrf_secret: bytes


def console_options(
    config: ConsoleConfig, identities: Path | None = None, environ: Mapping[str, str] = os.environ
) -> ConsoleOptions:
    """Read the variables the config names; a missing one is a ConveyorError naming it and the setting."""
    tokens = []
    for token in config.tokens:
        value = environ.get(token.env)
        if not value:
            raise ConveyorError(f"{token.env} is not set (console.tokens: the token of '{token.name}')")
        tokens.append((value.encode(), token))
    secret = os.urandom(32)  # without a configured secret, forms are valid only for this process
    if config.csrf_secret_env:
        configured = environ.get(config.csrf_secret_env)
        if not configured:
            raise ConveyorError(f"{config.csrf_secret_env} is not set (console.csrfSecretEnv)")
        secret = configured.encode()
    try:
        directory = load_directory(identities)
    except DeclarationError as err:
        raise ConveyorError(str(err)) from None
    return ConsoleOptions(config=config, directory=directory, tokens=tuple(tokens), csrf_secret=secret)


def options_of(request: Request) -> ConsoleOptions:
    options: ConsoleOptions = request.app.state.console_options
    return options


def trusted_peer(request: Request, options: ConsoleOptions) -> bool:
    """Whether the TCP peer is one of the configured proxies (uvicorn runs without proxy headers, so
    `request.client` is the socket's peer, not an X-Forwarded-For value)."""
    if request.client is None:
        return False
    try:
        peer = ip_address(request.client.host)
    except ValueError:
        return False
    return any(peer in network for network in options.config.trusted_proxies)


def roles_of(
    options: ConsoleOptions, user: str, email: str | None = None, groups: frozenset[str] = frozenset()
) -> frozenset[Role]:
    """Roles from the viewers/operators lists, matched against every name the directory knows for the person
    and the groups the trusted proxy names (`group:NAME`)."""
    names = options.directory.closure(user) | (options.directory.closure(f"email:{email}") if email else set())
    names |= {f"group:{group}" for group in groups}

    def listed(entries: list[str]) -> bool:
        return any(entry == ANYONE or normalize(entry) in names for entry in entries)

    if listed(options.config.operators):
        return frozenset({Role.OPERATOR, Role.VIEWER})  # an operator can view
    return frozenset({Role.VIEWER}) if listed(options.config.viewers) else frozenset()


def identify(request: Request, options: ConsoleOptions) -> Viewer:
    """The viewer of a request, or Refused(401)."""
    authorization = request.headers.get("authorization", "")
    if authorization:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Refused(401, "Not signed in", "the Authorization header must be 'Bearer <token>'")
        token = _token(options, presented.strip().encode())
        if token is None:
            raise Refused(401, "Not signed in", "this bearer token is not one the console accepts")
        roles = {token.role, Role.VIEWER}
        return Viewer(user=token.name, roles=frozenset(roles), via=Via.TOKEN)
    if trusted_peer(request, options):
        user = request.headers.get(options.config.user_header, "").strip()
        email_header = options.config.email_header
        email = (request.headers.get(email_header, "").strip() or None) if email_header else None
        groups_header = options.config.groups_header
        listed = request.headers.get(groups_header, "") if groups_header else ""
        groups = frozenset(g.strip() for g in listed.split(",") if g.strip())
        if user:
            granted = roles_of(options, user, email, groups)
            return Viewer(user=user, roles=granted, via=Via.PROXY, email=email, groups=groups)
    # Any other peer's header is ignored: anyone who can reach this port directly could write it.
    if options.config.anonymous is not None:
        return Viewer(user="anonymous", roles=frozenset({Role.VIEWER}), via=Via.ANONYMOUS)
    raise Refused(
        401,
        "Not signed in",
        "sign in through your SSO proxy, or send 'Authorization: Bearer <token>'; anonymous access is off",
    )


def _token(options: ConsoleOptions, presented: bytes) -> BearerToken | None:
    """The token whose value this is, compared in constant time against every configured one."""
    found = None
    for value, token in options.tokens:
        if hmac.compare_digest(value, presented):
            found = token
    return found


def authenticated(request: Request) -> Viewer:
    """Run on every console request (the app's dependency); routes take it again at no cost."""
    cached: Viewer | None = getattr(request.state, "viewer", None)
    if cached is None:
        cached = identify(request, options_of(request))
        request.state.viewer = cached
    return cached


Authenticated = Annotated[Viewer, Depends(authenticated)]


def identified(viewer: Authenticated) -> Viewer:
    """A known person, whatever their role (deciding an approval: the approval policy decides)."""
    if viewer.via == Via.ANONYMOUS:
        raise Refused(401, "Not signed in", "this needs a signed-in person: anonymous access is read-only")
    return viewer


def _require(role: Role, viewer: Viewer) -> Viewer:
    if not viewer.can(role):
        raise Refused(
            403,
            "Not allowed",
            f"this needs the {role.value} role, which {viewer.user} does not have "
            f"(console.{role.value}s in the service's config)",
        )
    return viewer


def viewing(viewer: Authenticated) -> Viewer:
    return _require(Role.VIEWER, viewer)


def operating(viewer: Authenticated) -> Viewer:
    return _require(Role.OPERATOR, viewer)


# What a route takes: `viewer: Viewing` (read), `Operating` (act), `Identified` (a known person: approvals).
Viewing = Annotated[Viewer, Depends(viewing)]
Operating = Annotated[Viewer, Depends(operating)]
Identified = Annotated[Viewer, Depends(identified)]
