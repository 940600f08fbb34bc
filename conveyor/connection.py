"""Connecting to Temporal with Conveyor's data converter and the standard client settings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, UpdateNamespaceRequest
from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.service import RPCError, RPCStatusCode

from conveyor import search_attributes
from conveyor.payloads import data_converter
from conveyor.settings import Settings
from conveyor.telemetry import metrics_runtime, tracing_interceptors

DEFAULT_RETENTION_DAYS = 30

_INDEXED_TYPES = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}


class TemporalUnavailableError(RuntimeError):
    """Temporal could not be reached; the message says where and what to check."""


def _cluster_options(settings: Settings) -> dict[str, Any]:
    """The standard Temporal client settings (TEMPORAL_API_KEY, TEMPORAL_TLS*, TEMPORAL_PROFILE and the
    config file `temporal` itself uses), for a configured cluster only: never for the embedded server."""
    try:
        options: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    except Exception as exc:  # noqa: BLE001 - a malformed config file or variable
        raise TemporalUnavailableError(f"cannot read the Temporal client configuration: {exc}") from None
    options.pop("target_host", None)
    options.pop("namespace", None)
    if settings.temporal_api_key:
        options["api_key"] = settings.temporal_api_key
    if settings.temporal_tls or options.get("api_key"):
        options.setdefault("tls", True)
    return options


async def connect(address: str, settings: Settings, *, telemetry: bool = False) -> Client:
    """`telemetry`: a worker's client, which serves Prometheus metrics (CONVEYOR_METRICS_ADDRESS) and traces
    (OTEL_TRACES_EXPORTER) when configured; a CLI command's client does neither."""
    options = _cluster_options(settings) if settings.temporal_address == address else {}
    if telemetry:
        options["runtime"] = metrics_runtime(settings)
        options["interceptors"] = tracing_interceptors()
    try:
        return await Client.connect(
            address, namespace=settings.temporal_namespace, data_converter=data_converter, **options
        )
    except RuntimeError as exc:
        raise TemporalUnavailableError(
            f"cannot connect to Temporal at {address} (namespace {settings.temporal_namespace}): {exc}"
        ) from None


async def missing_search_attributes(client: Client) -> list[str]:
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    present = set(response.custom_attributes) | set(response.system_attributes)
    return [name for name in search_attributes.CLI_TYPES if name not in present]


async def ensure_search_attributes(client: Client) -> None:
    """Register what is missing: an unregistered attribute blocks every workflow task that sets it."""
    try:
        missing = await missing_search_attributes(client)
    except RPCError as err:
        if err.status != RPCStatusCode.UNIMPLEMENTED:  # the time-skipping test server cannot list them
            raise
        missing = list(search_attributes.CLI_TYPES)
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={name: _INDEXED_TYPES[search_attributes.CLI_TYPES[name]] for name in missing},
            )
        )


async def retention(client: Client) -> timedelta:
    described = await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=client.namespace))
    return described.config.workflow_execution_retention_ttl.ToTimedelta()


async def ensure_retention(client: Client, days: int) -> None:
    """The dev server's default of one day would erase history, rollback targets and approvals."""
    wanted = timedelta(days=days)
    if await retention(client) == wanted:
        return
    config = NamespaceConfig()
    config.workflow_execution_retention_ttl.FromTimedelta(wanted)
    try:
        await client.workflow_service.update_namespace(
            UpdateNamespaceRequest(namespace=client.namespace, config=config)
        )
    except RPCError as exc:
        raise TemporalUnavailableError(
            f"cannot set retention of namespace {client.namespace} to {days} days: {exc}"
        ) from None


def fix_commands(address: str, namespace: str, missing: list[str], retention_days: int | None) -> list[str]:
    """The `temporal operator ...` lines that fix what `conveyor worker` found missing."""
    lines = [
        f"temporal operator search-attribute create --address {address} --namespace {namespace} "
        f"--name {name} --type {search_attributes.CLI_TYPES[name]}"
        for name in missing
    ]
    if retention_days is not None:
        lines.append(
            f"temporal operator namespace update --address {address} --namespace {namespace} "
            f"--retention {retention_days * 24}h"
        )
    return lines
