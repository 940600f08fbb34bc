"""Cross-site request forgery: every console form carries a token bound to its user, and every POST needs it.

The token is `EXPIRY.HMAC(secret, user|EXPIRY)`: nothing is stored, a token taken from one user's page is
worthless for another, and it expires. The secret comes from the variable `console.csrfSecretEnv` names, else
a random one per process (forms open across a restart then ask to be submitted again).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

from fastapi import Depends, Request

from conveyor.console.auth import Authenticated, Refused, Via, options_of, trusted_peer

FIELD = "csrf"  # the form field carrying the token
CONFIRMED = "confirmed"  # the field the confirm page adds: "yes" means act now
LIFETIME = 12 * 3600  # seconds a page's forms stay valid
MAX_FORM = 64 * 1024  # bytes: a console form is a few fields


def issue(secret: bytes, user: str, now: float | None = None) -> str:
    expiry = int((now if now is not None else time.time()) + LIFETIME)
    return f"{expiry}.{_mac(secret, user, expiry)}"


def valid(secret: bytes, user: str, token: str, now: float | None = None) -> bool:
    expiry_text, _, mac = token.partition(".")
    if not expiry_text.isdigit() or int(expiry_text) < (now if now is not None else time.time()):
        return False
    return hmac.compare_digest(mac, _mac(secret, user, int(expiry_text)))


def _mac(secret: bytes, user: str, expiry: int) -> str:
    return hmac.new(secret, f"{user}|{expiry}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Form:
    """A console form's fields (application/x-www-form-urlencoded), its token checked."""

    values: dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def required(self, name: str) -> str:
        value = self.values.get(name, "").strip()
        if not value:
            raise Refused(400, "Missing field", f"the form field '{name}' is required")
        return value

    @property
    def confirmed(self) -> bool:
        return self.values.get(CONFIRMED) == "yes"

    @property
    def fields(self) -> dict[str, str]:
        """What the person entered: the confirm page carries these to the second POST."""
        return {k: v for k, v in self.values.items() if k not in (FIELD, CONFIRMED)}


def own_origin(request: Request) -> bool:
    """An Origin header, when the browser sends one, names this console's host (the proxy's, if trusted)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    if trusted_peer(request, options_of(request)):
        host = request.headers.get("x-forwarded-host", host)
    return urlsplit(origin).netloc.lower() == host.lower()


async def checked_form(request: Request, viewer: Authenticated) -> Form:
    """The POSTed form, or Refused(403) when it is forged: a foreign Origin, or no valid token for this user."""
    if not own_origin(request):
        raise Refused(403, "Refused", "this form was sent from another site (its Origin is not this console)")
    body = await request.body()
    if len(body) > MAX_FORM:
        raise Refused(413, "Too large", f"a console form is at most {MAX_FORM} bytes")
    values = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    # A bearer-token request carries no cookie or ambient credential a browser would attach on another
    # site's behalf: a forger cannot send it without knowing the token, so it needs no CSRF token.
    if viewer.via != Via.TOKEN and not valid(options_of(request).csrf_secret, viewer.user, values.get(FIELD, "")):
        raise Refused(403, "Refused", "the form's security token is missing, expired or not yours: reload the page")
    return Form(values)


CheckedForm = Annotated[Form, Depends(checked_form)]  # after the role in a route's parameters
