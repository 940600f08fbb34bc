"""Conveyor's search attributes: every execution carries them, every embedded start registers them."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PIPELINE_NAME = SearchAttributeKey.for_keyword("PipelineName")
PIPELINE_STATUS = SearchAttributeKey.for_keyword("PipelineStatus")
PIPELINE_VERSION = SearchAttributeKey.for_int("PipelineVersion")
PIPELINE_TRIGGER = SearchAttributeKey.for_keyword("PipelineTrigger")
PIPELINE_STAGES_SUCCEEDED = SearchAttributeKey.for_keyword_list("PipelineStagesSucceeded")

ALL = (PIPELINE_NAME, PIPELINE_STATUS, PIPELINE_VERSION, PIPELINE_TRIGGER, PIPELINE_STAGES_SUCCEEDED)

# name -> the type word `temporal operator search-attribute create --type` takes
CLI_TYPES = {
    PIPELINE_NAME.name: "Keyword",
    PIPELINE_STATUS.name: "Keyword",
    PIPELINE_VERSION.name: "Int",
    PIPELINE_TRIGGER.name: "Keyword",
    PIPELINE_STAGES_SUCCEEDED.name: "KeywordList",
}
