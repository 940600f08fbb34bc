"""imagedefinitions.json, and the new task definition revision it makes: pure functions, no AWS calls.

The file is CodePipeline's: `[{"name": "<container>", "imageUri": "<image>"}, ...]`, at most 100 KB. Only the images of
the named containers change; everything else RegisterTaskDefinition takes is copied from the current revision.
"""

from __future__ import annotations

import json
from typing import Any

from conveyor.providers.ecs import ATTEMPT_TAG, PREVIOUS_TAG

MAX_FILE_BYTES = 100 * 1024
# What DescribeTaskDefinition returns that RegisterTaskDefinition takes back (the rest is ECS's own: arn, revision,
# status, requiresAttributes, compatibilities, registeredAt/By, deregisteredAt).
REGISTER_KEYS = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
    "enableFaultInjection",
)


class ImageDefinitionsError(ValueError):
    """A problem of the file, its message naming the file and the entry."""


def parse_image_definitions(text: bytes, file_name: str) -> dict[str, str]:
    """{container name: image URI}, in the file's order; refuses what ECS could not deploy, naming the entry."""
    if len(text) > MAX_FILE_BYTES:
        raise ImageDefinitionsError(f"{file_name} is {len(text)} bytes; CodePipeline's limit is 100 KB")
    try:
        data = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        where = f" ({err.msg} at line {err.lineno})" if isinstance(err, json.JSONDecodeError) else ""
        raise ImageDefinitionsError(
            f'{file_name} is not JSON{where}; write [{{"name": "<container>", "imageUri": "<image>"}}, ...]'
        ) from None
    if not isinstance(data, list) or not data:
        raise ImageDefinitionsError(
            f'{file_name} must be a non-empty JSON list: [{{"name": "<container>", "imageUri": "<image>"}}, ...]'
        )
    images: dict[str, str] = {}
    for index, entry in enumerate(data):
        where = f"{file_name} entry {index + 1}"
        if not isinstance(entry, dict):
            raise ImageDefinitionsError(f'{where} is not an object: write {{"name": "<container>", "imageUri": "..."}}')
        name, uri = entry.get("name"), entry.get("imageUri")
        if not isinstance(name, str) or not name.strip():
            raise ImageDefinitionsError(f'{where} has no "name" (the container\'s name in the task definition)')
        where = f"{where} ('{name}')"
        if not isinstance(uri, str) or not uri.strip():
            raise ImageDefinitionsError(f'{where} has no "imageUri" (the image to deploy, e.g. <repo-uri>:<tag>)')
        if any(c.isspace() for c in uri):
            raise ImageDefinitionsError(f"{where}: imageUri '{uri}' contains whitespace")
        if name in images:
            raise ImageDefinitionsError(f"{where} names container '{name}' a second time")
        images[name] = uri.strip()
    return images


def new_revision_request(
    current: dict[str, Any], tags: list[dict[str, str]], images: dict[str, str], marker: str, file_name: str
) -> dict[str, Any]:
    """RegisterTaskDefinition's arguments: the current revision with only the named containers' images replaced,
    its tags kept (less an earlier action's markers) and this attempt's markers added."""
    containers = [dict(c) for c in current.get("containerDefinitions", [])]
    known = [c.get("name") for c in containers]
    missing = [name for name in images if name not in known]
    if missing:
        raise ImageDefinitionsError(
            f"{file_name} names container{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} "
            f"that task definition {current.get('taskDefinitionArn')} does not have (its containers: "
            f"{', '.join(repr(k) for k in known)})"
        )
    for container in containers:
        if container.get("name") in images:
            container["image"] = images[container["name"]]
    request = {key: current[key] for key in REGISTER_KEYS if current.get(key) not in (None, [], {})}
    request["containerDefinitions"] = containers
    kept = [t for t in tags if t.get("key") not in (ATTEMPT_TAG, PREVIOUS_TAG)]
    request["tags"] = [
        *kept,
        {"key": ATTEMPT_TAG, "value": marker},
        {"key": PREVIOUS_TAG, "value": current["taskDefinitionArn"]},
    ]
    return request


def tag(tags: list[dict[str, str]], key: str) -> str | None:
    return next((t.get("value") for t in tags if t.get("key") == key), None)
