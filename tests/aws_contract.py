"""Every touch of moto's internals, for contract tests (the moto server runs in the test process)."""

from __future__ import annotations

from moto.sts.models import sts_backends


def assumed_role_credentials(account: str) -> list[tuple[str, str, str, str]]:
    """(session name, AccessKeyId, SecretAccessKey, SessionToken) of each role assumed in `account`: what STS gave
    the worker, to search the recorded histories for."""
    return [
        (role.session_name, role.access_key_id, role.secret_access_key, role.session_token)
        for role in sts_backends[account]["aws"].assumed_roles
    ]
