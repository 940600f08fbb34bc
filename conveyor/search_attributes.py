"""Conveyor's search attributes: every execution carries them, every embedded start registers them."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PIPELINE_NAME = SearchAttributeKey.for_keyword("PipelineName")
PIPELINE_STATUS = SearchAttributeKey.for_keyword("PipelineStatus")
PIPELINE_VERSION = SearchAttributeKey.for_int("PipelineVersion")

ALL = (PIPELINE_NAME, PIPELINE_STATUS, PIPELINE_VERSION)

# name -> the type word `temporal operator search-attribute create --type` takes
CLI_TYPES = {PIPELINE_NAME.name: "Keyword", PIPELINE_STATUS.name: "Keyword", PIPELINE_VERSION.name: "Int"}
