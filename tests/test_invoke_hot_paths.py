"""The invoke providers' hot paths measured by `python -m bench --scenarios invoke`: boto3 sessions share one data
loader (service models parsed once per process), and a Lambda job's answer is read soon after it arrives."""

from __future__ import annotations

import itertools

from activities.aws.session import AwsSessions
from activities.providers.lambda_invoke import FIRST_POLL_SECONDS, POLL_SECONDS, poll_intervals
from conveyor.aws.identity import AwsIdentity
from conveyor.settings import Settings
from tests.aws import Aws


def test_sessions_share_the_service_models_and_keep_one_search_path_each(aws: Aws, settings: Settings) -> None:
    sessions = AwsSessions(settings)
    identity = AwsIdentity(session_name="conveyor-p-e-1")
    first, second = sessions.session(identity, "A"), sessions.session(identity, "B")
    assert first is not second  # fresh sessions, as before: only the parsed models are shared
    loader = first._session.get_component("data_loader")
    assert second._session.get_component("data_loader") is loader
    assert len(loader.search_paths) == len(set(loader.search_paths))  # boto3 adds its path per session: once here
    first.client("sts").get_caller_identity()  # the shared loader serves real clients
    assert second.client("lambda").list_functions()["Functions"] == []


def test_a_job_answer_is_read_within_milliseconds_at_first_then_every_quarter_second() -> None:
    waits = list(itertools.islice(poll_intervals(), 20))
    assert waits[0] == FIRST_POLL_SECONDS <= 0.02
    assert sum(waits[:4]) < 0.1  # four reads in the first 100 ms (the old fixed 0.25 s read once)
    assert waits == sorted(waits) and max(waits) == waits[-1] == POLL_SECONDS == 0.25  # no more reads than before
