"""Conveyor's search attributes: every execution carries them, every embedded start registers them."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PIPELINE_NAME = SearchAttributeKey.for_keyword("PipelineName")
PIPELINE_STATUS = SearchAttributeKey.for_keyword("PipelineStatus")
PIPELINE_VERSION = SearchAttributeKey.for_int("PipelineVersion")
PIPELINE_TRIGGER = SearchAttributeKey.for_keyword("PipelineTrigger")
PIPELINE_STAGES_SUCCEEDED = SearchAttributeKey.for_keyword_list("PipelineStagesSucceeded")
# the revision ids of the execution's sources, each in full and shortened (SHORT_REVISION_LENGTHS)
PIPELINE_SOURCE_REVISIONS = SearchAttributeKey.for_keyword_list("PipelineSourceRevisions")

ALL = (
    PIPELINE_NAME,
    PIPELINE_STATUS,
    PIPELINE_VERSION,
    PIPELINE_TRIGGER,
    PIPELINE_STAGES_SUCCEEDED,
    PIPELINE_SOURCE_REVISIONS,
)

# name -> the type word `temporal operator search-attribute create --type` takes
CLI_TYPES = {
    PIPELINE_NAME.name: "Keyword",
    PIPELINE_STATUS.name: "Keyword",
    PIPELINE_VERSION.name: "Int",
    PIPELINE_TRIGGER.name: "Keyword",
    PIPELINE_STAGES_SUCCEEDED.name: "KeywordList",
    PIPELINE_SOURCE_REVISIONS.name: "KeywordList",
}

SHORT_REVISION_LENGTHS = (7, 12)  # git's short id, and the prefix `conveyor status` shows


def revision_keys(revision_ids: list[str]) -> list[str]:
    """What PipelineSourceRevisions holds for these revision ids: each in full and shortened, once, in order."""
    keys: list[str] = []
    for revision_id in revision_ids:
        for key in (revision_id, *(revision_id[:length] for length in SHORT_REVISION_LENGTHS)):
            if key and key not in keys:
                keys.append(key)
    return keys
