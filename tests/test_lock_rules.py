"""The coordinator's lock rules (workflows/locks.py) as tables, without a server: each execution mode
against a free, held, waited-for and closed (transition disabled) stage; repeats, releases, transitions,
facts, and taking a stage back from an ended holder."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor.interface import EntryDecision, ExecutionMode, ReleaseOutcome
from conveyor.model import (
    CoordinatorState,
    ExecutionSlot,
    StageEntryDecision,
    StageEntryRequest,
    StageFact,
    StageLock,
    StageRelease,
    TransitionChange,
    TransitionState,
)
from workflows.locks import Decision, Reclaimed, StageLocks

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
STAGE = "Deploy"
SUPERSEDED, QUEUED, PARALLEL = ExecutionMode.SUPERSEDED, ExecutionMode.QUEUED, ExecutionMode.PARALLEL


def slot(n: int) -> ExecutionSlot:
    """Execution `e<n>`, started n minutes after T0 (a higher n is newer), of pipeline version n."""
    return ExecutionSlot(
        execution_id=f"e{n}", workflow_id=f"web/e{n}", started_at=T0 + timedelta(minutes=n), pipeline_version=n
    )


def request(
    n: int, mode: ExecutionMode, *, stage: str = STAGE, hold: bool = False, leaving: StageRelease | None = None
) -> StageEntryRequest:
    return StageEntryRequest(
        stage_name=stage, execution=slot(n), execution_mode=mode, hold_at_transition=hold, leaving=leaving
    )


def release(n: int, outcome: ReleaseOutcome, stage: str = STAGE) -> StageRelease:
    return StageRelease(stage_name=stage, execution_id=f"e{n}", outcome=outcome, pipeline_version=n)


def enter(n: int, stage: str = STAGE) -> Decision:
    return (f"web/e{n}", StageEntryDecision(stage_name=stage, decision=EntryDecision.ENTER))


def superseded(n: int, by: int) -> Decision:
    decision = StageEntryDecision(stage_name=STAGE, decision=EntryDecision.SUPERSEDED, superseded_by=f"e{by}")
    return (f"web/e{n}", decision)


def lock(
    holder: int | None = None,
    waiting: tuple[int, ...] = (),
    held: tuple[int, ...] = (),
    enabled: bool = True,
    stage: str = STAGE,
) -> StageLock:
    return StageLock(
        stage_name=stage,
        holder=slot(holder) if holder is not None else None,
        waiting=[slot(n) for n in waiting],
        held=[slot(n) for n in held],
        transition=TransitionState(enabled=enabled),
    )


def coordinator(*locks: StageLock) -> CoordinatorState:
    return CoordinatorState(pipeline_name="web", stages=list(locks))


def ids(slots: list[ExecutionSlot]) -> list[str]:
    return [s.execution_id for s in slots]


def shape(state: StageLock) -> tuple[str | None, list[str], list[str]]:
    """Who holds, who waits, who is held at the transition."""
    return (state.holder.execution_id if state.holder else None, ids(state.waiting), ids(state.held))


FREE, HELD, WAITED_FOR, CLOSED = lock(), lock(holder=1), lock(holder=1, waiting=(2,)), lock(enabled=False)

# (mode, the stage before, execution e3 asks to enter) -> decisions, (holder, waiting, held), newest entered
ENTRIES = [
    # SUPERSEDED: one holds, the newest waits, the older ones are superseded.
    (SUPERSEDED, FREE, False, [enter(3)], ("e3", [], []), "e3"),
    (SUPERSEDED, HELD, False, [], ("e1", ["e3"], []), None),
    (SUPERSEDED, WAITED_FOR, False, [superseded(2, by=3)], ("e1", ["e3"], []), None),
    (SUPERSEDED, CLOSED, False, [], (None, ["e3"], []), None),
    # QUEUED: one holds, the others wait in order.
    (QUEUED, FREE, False, [enter(3)], ("e3", [], []), "e3"),
    (QUEUED, HELD, False, [], ("e1", ["e3"], []), None),
    (QUEUED, WAITED_FOR, False, [], ("e1", ["e2", "e3"], []), None),
    (QUEUED, CLOSED, False, [], (None, ["e3"], []), None),
    # PARALLEL without holdAtTransition (a probe): no lock, only the fact.
    (PARALLEL, FREE, False, [], (None, [], []), "e3"),
    (PARALLEL, HELD, False, [], ("e1", [], []), "e3"),
    (PARALLEL, WAITED_FOR, False, [], ("e1", ["e2"], []), "e3"),
    (PARALLEL, CLOSED, False, [], (None, [], []), "e3"),
    # PARALLEL at a transition it found disabled: held while it is, let in at once if enabled meanwhile.
    (PARALLEL, FREE, True, [enter(3)], (None, [], []), None),
    (PARALLEL, HELD, True, [enter(3)], ("e1", [], []), None),
    (PARALLEL, WAITED_FOR, True, [enter(3)], ("e1", ["e2"], []), None),
    (PARALLEL, CLOSED, True, [], (None, [], ["e3"]), None),
]


@pytest.mark.parametrize(
    ("mode", "before", "hold", "decisions", "after", "newest"),
    [
        pytest.param(*row, id=f"{row[0]}-{name}{'-hold' if row[2] else ''}")
        for row, name in zip(ENTRIES, ["free", "held", "waited-for", "closed"] * 4, strict=True)
    ],
)
def test_entry(
    mode: ExecutionMode,
    before: StageLock,
    hold: bool,
    decisions: list[Decision],
    after: tuple[str | None, list[str], list[str]],
    newest: str | None,
) -> None:
    state = coordinator(before.model_copy(deep=True))
    assert StageLocks(state).request_entry(request(3, mode, hold=hold), NOW) == decisions
    stage = state.stage(STAGE)
    assert shape(stage) == after
    assert stage.newest_entered == (StageFact(execution_id=newest, pipeline_version=3, at=NOW) if newest else None)
    assert all(s.arrived_at == NOW for s in [*stage.waiting, *stage.held] if s.execution_id == "e3")


def test_superseded_is_decided_by_start_not_arrival() -> None:
    state = coordinator(lock(holder=1, waiting=(3,)))
    assert StageLocks(state).request_entry(request(2, SUPERSEDED), NOW) == [superseded(2, by=3)]
    assert shape(state.stage(STAGE)) == ("e1", ["e3"], [])


def test_a_stage_never_seen_is_free() -> None:
    state = coordinator()
    assert StageLocks(state).request_entry(request(1, QUEUED, stage="Build"), NOW) == [enter(1, "Build")]
    assert [s.stage_name for s in state.stages] == ["Build"]


# --- repeated requests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "asking", "mode", "hold", "decisions"),
    [
        pytest.param(lock(holder=1, waiting=(2,)), 1, QUEUED, False, [enter(1)], id="holder-answered-again"),
        pytest.param(lock(holder=1, waiting=(2,)), 1, SUPERSEDED, False, [enter(1)], id="holder-superseded-mode"),
        pytest.param(lock(holder=1, waiting=(2,)), 2, QUEUED, False, [], id="waiter-keeps-its-place"),
        pytest.param(lock(holder=1, waiting=(2,)), 2, SUPERSEDED, False, [], id="waiter-superseded-mode"),
        pytest.param(lock(held=(2,), enabled=False), 2, PARALLEL, True, [], id="held-once"),
    ],
)
def test_a_repeated_request_changes_nothing(
    before: StageLock, asking: int, mode: ExecutionMode, hold: bool, decisions: list[Decision]
) -> None:
    state = coordinator(before.model_copy(deep=True))
    assert StageLocks(state).request_entry(request(asking, mode, hold=hold), NOW) == decisions
    assert shape(state.stage(STAGE)) == shape(before)


# --- releases ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "leaving", "decisions", "after", "succeeded"),
    [
        pytest.param(
            lock(holder=1, waiting=(2, 3)),
            release(1, ReleaseOutcome.SUCCEEDED),
            [enter(2)],
            ("e2", ["e3"], []),
            "e1",
            id="holder-succeeded",
        ),
        pytest.param(
            lock(holder=1, waiting=(2,)),
            release(1, ReleaseOutcome.FAILED),
            [enter(2)],
            ("e2", [], []),
            None,
            id="holder-failed",
        ),
        pytest.param(
            lock(holder=1),
            release(1, ReleaseOutcome.STOPPED),
            [],
            (None, [], []),
            None,
            id="holder-stopped-nobody-waits",
        ),
        pytest.param(
            lock(holder=1, waiting=(2,), enabled=False),
            release(1, ReleaseOutcome.SUCCEEDED),
            [],
            (None, ["e2"], []),
            "e1",
            id="holder-leaves-a-closed-stage",
        ),
        pytest.param(
            lock(holder=1, waiting=(2, 3)),
            release(2, ReleaseOutcome.WITHDRAWN),
            [],
            ("e1", ["e3"], []),
            None,
            id="waiter-withdrawn",
        ),
        pytest.param(
            lock(held=(2,), enabled=False),
            release(2, ReleaseOutcome.WITHDRAWN),
            [],
            (None, [], []),
            None,
            id="held-withdrawn",
        ),
        pytest.param(
            lock(holder=1, waiting=(2,)), release(9, ReleaseOutcome.FAILED), [], ("e1", ["e2"], []), None, id="stranger"
        ),
        # A Succeeded release is a fact whoever sends it.
        pytest.param(
            lock(holder=1, waiting=(2,)),
            release(9, ReleaseOutcome.SUCCEEDED),
            [],
            ("e1", ["e2"], []),
            "e9",
            id="stranger-succeeded",
        ),
    ],
)
def test_release(
    before: StageLock,
    leaving: StageRelease,
    decisions: list[Decision],
    after: tuple[str | None, list[str], list[str]],
    succeeded: str | None,
) -> None:
    state = coordinator(before.model_copy(deep=True))
    assert StageLocks(state).release(leaving, NOW) == decisions
    stage = state.stage(STAGE)
    assert shape(stage) == after
    version = int(succeeded[1:]) if succeeded else 0
    assert stage.last_succeeded == (
        StageFact(execution_id=succeeded, pipeline_version=version, at=NOW) if succeeded else None
    )
    if decisions:
        assert stage.newest_entered == StageFact(execution_id="e2", pipeline_version=2, at=NOW)


def test_leaving_on_the_way_in_releases_first() -> None:
    state = coordinator(lock(holder=3, waiting=(4,), stage="Build"), lock())
    on_the_way = request(3, QUEUED, leaving=release(3, ReleaseOutcome.SUCCEEDED, stage="Build"))
    assert StageLocks(state).request_entry(on_the_way, NOW) == [enter(4, "Build"), enter(3)]
    assert shape(state.stage("Build")) == ("e4", [], [])
    assert state.stage("Build").last_succeeded == StageFact(execution_id="e3", pipeline_version=3, at=NOW)
    assert shape(state.stage(STAGE)) == ("e3", [], [])


# --- transitions -------------------------------------------------------------------------------------


def test_disable_lets_nobody_new_in_and_keeps_the_holder() -> None:
    state = coordinator(lock(holder=1))
    locks = StageLocks(state)
    change = TransitionChange(stage_name=STAGE, reason="freeze", by="ops")
    assert locks.disable_transition(change, NOW) == TransitionState(
        enabled=False, reason="freeze", changed_by="ops", changed_at=NOW
    )
    assert locks.disabled_transitions() == [STAGE]
    assert locks.release(release(1, ReleaseOutcome.SUCCEEDED), NOW) == []
    assert locks.request_entry(request(2, QUEUED), NOW) == []
    assert shape(state.stage(STAGE)) == (None, ["e2"], [])


@pytest.mark.parametrize(
    ("before", "decisions", "after"),
    [
        pytest.param(
            lock(waiting=(2, 3), held=(5, 6), enabled=False),
            [enter(2), enter(5), enter(6)],
            ("e2", ["e3"], []),
            id="free-next-waiter-and-held",
        ),
        pytest.param(
            lock(holder=1, waiting=(2,), held=(5,), enabled=False),
            [enter(5)],
            ("e1", ["e2"], []),
            id="held-only-while-one-holds",
        ),
        pytest.param(lock(held=(5, 6), enabled=False), [enter(5), enter(6)], (None, [], []), id="parallel-held"),
        pytest.param(lock(), [], (None, [], []), id="already-enabled"),
    ],
)
def test_enable(before: StageLock, decisions: list[Decision], after: tuple[str | None, list[str], list[str]]) -> None:
    state = coordinator(before.model_copy(deep=True))
    transition, sent = StageLocks(state).enable_transition(TransitionChange(stage_name=STAGE, by="ops"), NOW)
    assert transition == TransitionState(enabled=True, reason=None, changed_by="ops", changed_at=NOW)
    assert sent == decisions
    assert shape(state.stage(STAGE)) == after


def test_disabled_transitions_are_sorted() -> None:
    state = coordinator(lock(stage="Test", enabled=False), lock(stage="Build"), lock(stage="Prod", enabled=False))
    assert StageLocks(state).disabled_transitions() == ["Prod", "Test"]


# --- executions that are gone ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "gone", "decisions", "after"),
    [
        pytest.param(lock(holder=1, waiting=(2,)), 1, [enter(2)], ("e2", [], []), id="holder"),
        pytest.param(lock(holder=1, waiting=(2, 3)), 2, [], ("e1", ["e3"], []), id="waiter"),
        pytest.param(lock(held=(2,), enabled=False), 2, [], (None, [], []), id="held"),
    ],
)
def test_drop(
    before: StageLock, gone: int, decisions: list[Decision], after: tuple[str | None, list[str], list[str]]
) -> None:
    state = coordinator(before.model_copy(deep=True))
    assert StageLocks(state).drop(STAGE, f"e{gone}", NOW) == decisions
    assert shape(state.stage(STAGE)) == after


def test_holders_to_check() -> None:
    locks = StageLocks(
        coordinator(
            lock(holder=3, waiting=(4,), stage="A"), lock(holder=1, stage="B"), lock(holder=2, waiting=(5,), stage="C")
        )
    )
    assert locks.holders_to_check(only_waited_for=True) == ["web/e2", "web/e3"]
    assert locks.holders_to_check(only_waited_for=False) == ["web/e1", "web/e2", "web/e3"]
    assert StageLocks(coordinator(lock(waiting=(1,)))).holders_to_check(only_waited_for=False) == []


@pytest.mark.parametrize(
    ("closed", "reclaimed", "decisions", "after_a", "after_b"),
    [
        pytest.param(
            ["web/e1"], [Reclaimed("A", "e1")], [enter(2, "A")], ("e2", [], []), ("e3", [], []), id="one-closed-holder"
        ),
        pytest.param(
            ["web/e1", "web/e3"],
            [Reclaimed("A", "e1"), Reclaimed("B", "e3")],
            [enter(2, "A")],
            ("e2", [], []),
            (None, [], []),
            id="two",
        ),
        pytest.param(["web/e2"], [], [], ("e1", ["e2"], []), ("e3", [], []), id="a-closed-waiter-is-not-a-holder"),
        pytest.param([], [], [], ("e1", ["e2"], []), ("e3", [], []), id="all-alive"),
    ],
)
def test_reclaim(
    closed: list[str],
    reclaimed: list[Reclaimed],
    decisions: list[Decision],
    after_a: tuple[str | None, list[str], list[str]],
    after_b: tuple[str | None, list[str], list[str]],
) -> None:
    state = coordinator(lock(holder=1, waiting=(2,), stage="A"), lock(holder=3, stage="B"))
    assert StageLocks(state).reclaim(closed, NOW) == (reclaimed, decisions)
    assert (shape(state.stage("A")), shape(state.stage("B"))) == (after_a, after_b)


# --- what the coordinator's lifecycle asks -----------------------------------------------------------


@pytest.mark.parametrize(
    ("stages", "waits_behind", "at_rest", "at_rest_but_for_holders"),
    [
        pytest.param([], False, True, True, id="no-stages"),
        pytest.param([lock(), lock(stage="B")], False, True, True, id="free"),
        pytest.param([lock(holder=1)], False, False, True, id="held"),
        pytest.param([lock(holder=1, waiting=(2,))], True, False, False, id="waited-for"),
        pytest.param([lock(waiting=(2,), enabled=False)], False, False, False, id="waiting-at-a-closed-stage"),
        pytest.param([lock(held=(2,), enabled=False)], False, False, False, id="held-at-a-transition"),
        pytest.param([lock(enabled=False)], False, False, False, id="a-disabled-transition"),
    ],
)
def test_lifecycle_questions(
    stages: list[StageLock], waits_behind: bool, at_rest: bool, at_rest_but_for_holders: bool
) -> None:
    locks = StageLocks(coordinator(*stages))
    assert locks.someone_waits_behind_a_holder() == waits_behind
    assert locks.at_rest() == at_rest
    assert locks.at_rest(but_for_holders=True) == at_rest_but_for_holders


def test_the_rules_are_pure() -> None:
    """No temporalio: the rules run (and are tested) without a server or a workflow sandbox."""
    probe = "import sys, workflows.locks; print(sorted(m for m in sys.modules if m.split('.')[0] == 'temporalio'))"
    root = Path(__file__).resolve().parents[1]  # `python -c` imports from its working directory
    found = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
