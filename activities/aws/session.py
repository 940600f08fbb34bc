"""boto3 sessions for the identity an action runs as, and AWS errors turned into action errors.

The worker's own credentials come from boto3's standard chain (environment, shared files, container or instance
roles); endpoints from `AWS_ENDPOINT_URL` and its per-service variants, which boto3 reads itself. A role is
assumed through STS with the execution's session name and the credentials are kept in this worker process only,
until shortly before they expire: they never enter an activity's input or result, a log line or an error.

boto3 clients are thread-safe (sessions are not), so clients are made once per credentials identity, region,
service and endpoint, and shared by the actions of that identity until its assumed role is assumed again.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
import botocore.loaders
import botocore.session
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError
from temporalio.exceptions import ApplicationError

from conveyor.aws.identity import AwsIdentity
from conveyor.settings import Settings
from conveyor.text import shorten

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_codebuild import CodeBuildClient
    from mypy_boto3_codedeploy import CodeDeployClient
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_elasticbeanstalk import ElasticBeanstalkClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_stepfunctions import SFNClient
    from mypy_boto3_sts import STSClient

ROLE_DURATION_SECONDS = 3600
REFRESH_BEFORE = timedelta(minutes=5)  # an assumed role is assumed again this long before it expires
MAX_ASSUMED = 128  # assumed-role identities (one per role and execution) kept, least recently used dropped first
# What boto3 reads from the environment when it makes a client: part of a cached client's key, so a client made for
# one region, endpoint or set of worker credentials is never served for another.
_CLIENT_ENVIRONMENT = (
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)

ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
    }
)
# Errors whose AWS message may quote the request's signature material: only their code is shown.
_SIGNATURE_CODES = frozenset({"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidClientTokenId", "InvalidToken"})
_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b")


class _SearchPaths(list[str]):
    """boto3 appends its data directory to the loader's search paths on every new session: kept once."""

    def append(self, path: str) -> None:
        if path not in self:
            super().append(path)


@functools.cache
def _data_loader() -> botocore.loaders.Loader:
    """One botocore data loader per process: it caches the service models it parses."""
    loader = botocore.loaders.create_loader()
    loader._search_paths = _SearchPaths(loader.search_paths)  # type: ignore[attr-defined]  # what search_paths gives
    return loader


def new_session(region: str | None, **credentials: str) -> boto3.session.Session:
    """A fresh boto3 session sharing the process's data loader. A session of its own would parse its services' models
    (JSON) again: about 150-450 ms per new client on 2 busy cores, measured by `python -m bench --scenarios invoke`;
    about 40 ms with the shared loader."""
    core = botocore.session.Session()
    core.register_component("data_loader", _data_loader())
    return boto3.session.Session(botocore_session=core, region_name=region, **credentials)


def _environment() -> tuple[str | None, ...]:
    endpoints = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("AWS_ENDPOINT_URL"))
    return (*(os.environ.get(name) for name in _CLIENT_ENVIRONMENT), *endpoints)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Assumed:
    session: boto3.session.Session
    expires: datetime
    clients: dict[tuple[str, tuple[str | None, ...]], Any] = field(default_factory=dict)


class AwsSessions:
    """One per provider in a worker: sessions per (role, session name, region), roles assumed once and reused until
    they are close to expiry; clients per (credentials identity, region, service, endpoint), made once and refreshed
    with the assumed role's credentials. `clock` is for tests."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = _now) -> None:
        self.settings = settings
        self._clock = clock
        self._assumed: OrderedDict[tuple[str, str, str | None], _Assumed] = OrderedDict()
        self._own: dict[tuple[str, str | None, tuple[str | None, ...]], Any] = {}  # the worker's credentials
        self._accounts: dict[tuple[str | None, str | None, tuple[str | None, ...]], str] = {}
        self._lock = threading.Lock()

    def s3(self, identity: AwsIdentity, action: str) -> S3Client:
        return self.client(identity, "s3", action)

    def ecr(self, identity: AwsIdentity, action: str) -> ECRClient:
        return self.client(identity, "ecr", action)

    def role(self, identity: AwsIdentity) -> str | None:
        return identity.role_for(self.settings.aws)

    # One overload per service the worker calls, so each provider keeps its typed client.
    @overload
    def client(
        self, identity: AwsIdentity, service: Literal["cloudformation"], action: str
    ) -> CloudFormationClient: ...
    @overload
    def client(self, identity: AwsIdentity, service: Literal["cloudwatch"], action: str) -> CloudWatchClient: ...
    @overload
    def client(self, identity: AwsIdentity, service: Literal["codebuild"], action: str) -> CodeBuildClient: ...
    @overload
    def client(self, identity: AwsIdentity, service: Literal["codedeploy"], action: str) -> CodeDeployClient: ...
    @overload
    def client(self, identity: AwsIdentity, service: Literal["ecr"], action: str) -> ECRClient: ...
    @overload
    def client(self, identity: AwsIdentity, service: Literal["ecs"], action: str) -> ECSClient: ...
    @overload
    def client(
        self, identity: AwsIdentity, service: Literal["elasticbeanstalk"], action: str
    ) -> ElasticBeanstalkClient: ...
    @overload
    def client(self, identity: AwsIdentity, service: Literal["lambda"], action: str) -> LambdaClient: ...
    @overload
    def client(self, identity: AwsIdentity, service: Literal["s3"], action: str) -> S3Client: ...
    @overload
    def client(self, identity: AwsIdentity, service: Literal["stepfunctions"], action: str) -> SFNClient: ...
    @overload
    def client(self, identity: AwsIdentity, service: Literal["sts"], action: str) -> STSClient: ...
    @overload
    def client(self, identity: AwsIdentity, service: str, action: str) -> Any: ...

    def client(self, identity: AwsIdentity, service: str, action: str) -> Any:
        """The client of `service` for `action`'s identity (blocking the first time: call it from a thread)."""
        environment = _environment()
        role = self.role(identity)
        if role is None:
            key = (service, identity.region, environment)
            with self._lock:
                found = self._own.get(key)
                if found is None:
                    found = self._own[key] = new_session(identity.region).client(service)  # type: ignore[call-overload]
                return found
        assumed = self._assumed_session(role, identity, action)
        with self._lock:  # a session is not thread-safe: clients are made from it one at a time
            found = assumed.clients.get((service, environment))
            if found is None:
                found = assumed.clients[(service, environment)] = assumed.session.client(service)  # type: ignore[call-overload]
            return found

    def account(self, identity: AwsIdentity, action: str) -> str:
        """The account the identity's calls run in: the assumed role's, else the worker's (STS, asked once)."""
        role = self.role(identity)
        parts = (role or "").split(":")
        if len(parts) > 4 and parts[4].isdigit():
            return parts[4]
        key = (role, identity.session_name if role else None, _environment())
        with self._lock:
            found = self._accounts.get(key)
        if found is None:
            with aws_errors(action, "sts:GetCallerIdentity", role):
                found = str(self.client(identity, "sts", action).get_caller_identity()["Account"])
            with self._lock:
                self._accounts[key] = found
        return found

    def session(self, identity: AwsIdentity, action: str) -> boto3.session.Session:
        """The session to call AWS with for `action` (blocking: call it from a thread). Not thread-safe: prefer
        `client`, which shares clients between actions."""
        role = self.role(identity)
        if role is None:
            return new_session(identity.region)
        return self._assumed_session(role, identity, action).session

    def _assumed_session(self, role: str, identity: AwsIdentity, action: str) -> _Assumed:
        key = (role, identity.session_name, identity.region)
        with self._lock:
            cached = self._assumed.get(key)
            if cached is not None and cached.expires - REFRESH_BEFORE > self._clock():
                self._assumed.move_to_end(key)
                return cached
        assumed = self._assume(role, identity, action)
        with self._lock:
            self._assumed[key] = assumed
            self._assumed.move_to_end(key)
            while len(self._assumed) > MAX_ASSUMED:
                self._assumed.popitem(last=False)
        return assumed

    def _assume(self, role: str, identity: AwsIdentity, action: str) -> _Assumed:
        sts = self.client(identity.model_copy(update={"role_arn": None, "pipeline_role_arn": None}), "sts", action)
        with aws_errors(action, "sts:AssumeRole", None, target=role):
            response = sts.assume_role(
                RoleArn=role, RoleSessionName=identity.session_name, DurationSeconds=ROLE_DURATION_SECONDS
            )
        credentials = response["Credentials"]
        session = new_session(
            identity.region,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )
        expires = credentials["Expiration"]
        return _Assumed(session, expires if expires.tzinfo else expires.replace(tzinfo=UTC))


def refused(message: str, type: str = "ConfigurationError") -> ApplicationError:
    """What a retry cannot fix (bad configuration, a missing artifact): the action fails at once."""
    return ApplicationError(message, type=type, non_retryable=True)


@contextmanager
def aws_errors(action: str, call: str, role: str | None, *, target: str | None = None) -> Iterator[None]:
    """AWS failures of `call` (e.g. `s3:PutObject`) as the action's errors: AccessDenied (non-retryable) naming
    the action, the role and the call; throttling and 5xx as AwsUnavailable (retryable); a missing resource as
    AwsNotFound and anything else as AwsError (both non-retryable). Messages carry no credentials."""
    who = f"role {role}" if role else "the worker's credentials"
    on = f" on {target}" if target else ""
    try:
        yield
    except ClientError as err:
        error = err.response.get("Error", {})
        code = str(error.get("Code") or "")
        status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in ACCESS_DENIED_CODES or status == 403 or code in _SIGNATURE_CODES:
            detail = "" if code in ACCESS_DENIED_CODES or not code else f" ({code})"
            raise ApplicationError(
                f"action '{action}': access denied calling {call}{on} as {who}{detail}",
                type="AccessDenied",
                non_retryable=True,
            ) from None
        message = "" if code in _SIGNATURE_CODES else _KEY_ID.sub("****", str(error.get("Message") or ""))
        text = f"action '{action}': {call}{on} failed as {who}: {code or status}" + (
            f": {shorten(message, 300)}" if message else ""
        )
        if code in TRANSIENT_CODES or status >= 500:
            raise ApplicationError(text, type="AwsUnavailable") from None
        not_found = status == 404 or code.startswith("NoSuch") or code.endswith("NotFoundException")
        raise ApplicationError(text, type="AwsNotFound" if not_found else "AwsError", non_retryable=True) from None
    except NoCredentialsError:
        raise ApplicationError(
            f"action '{action}': no AWS credentials for {call}: give the worker some through boto3's standard chain "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance or container role)",
            type="AwsCredentials",
            non_retryable=True,
        ) from None
    except EndpointConnectionError as err:
        raise ApplicationError(
            f"action '{action}': {call} could not reach {err.kwargs.get('endpoint_url', 'AWS')}", type="AwsUnavailable"
        ) from None
    except BotoCoreError as err:
        text = _KEY_ID.sub("****", str(err))
        raise ApplicationError(f"action '{action}': {call} failed: {shorten(text, 300)}", type="AwsError") from None
