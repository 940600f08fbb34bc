"""What garbage collection (conveyor.gc) sees of a store: its content-addressed entries and their last use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class StoredKind(StrEnum):
    """What a store entry is: an artifact's archive or a pipeline declaration (document)."""

    ARTIFACT = "artifact"
    DOCUMENT = "document"


@dataclass(frozen=True)
class StoreEntry:
    """One content-addressed entry, as garbage collection sees it (conveyor.gc)."""

    kind: StoredKind
    digest: str  # "sha256:<hex>"
    size: int
    last_used: datetime  # stored, or last found already there (a deduplicated put) or read
