"""Small helpers shared by the tests."""

from __future__ import annotations

import uuid
from typing import Any

import yaml


def pipeline(text: str) -> dict[str, Any]:
    """A declaration from inline YAML, with a unique name so tests never share executions."""
    data = yaml.safe_load(text)
    data["name"] = f"{data['name']}-{uuid.uuid4().hex[:8]}"
    return data
