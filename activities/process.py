"""Process groups for action commands: start them, record them, and kill them with everything they spawned.

Each action runs in its own session, so one `killpg` reaches the shell and every background child it
started. The group is recorded (host, boot, leader pid and start time) in the activity's heartbeat,
so that when a worker dies mid-command the retried attempt can kill the orphans it left, and only
those: a pid alone could by then belong to an unrelated process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil
import structlog

from conveyor.model import CamelModel

_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
_START_TIME_TOLERANCE = 0.05  # seconds; create_time is derived from clock ticks since boot
_POLL_SECONDS = 0.05
ORPHAN_WAIT_SECONDS = 5.0


class ProcessGroupRecord(CamelModel):
    """Enough to recognise a process group again later, even from another worker process."""

    host: str
    boot_id: str
    pgid: int
    leader_pid: int
    leader_start_time: float

    @classmethod
    def for_leader(cls, pid: int) -> ProcessGroupRecord:
        """Record the group led by `pid`, a process started by `start_process_group`."""
        try:
            start_time = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            start_time = 0.0  # already exited and reaped: nothing for a later attempt to kill
        return cls(
            host=socket.gethostname(),
            boot_id=read_boot_id(),
            pgid=pid,  # a new session's leader is its group's leader: pgid == pid
            leader_pid=pid,
            leader_start_time=start_time,
        )


def read_boot_id() -> str:
    """This boot's id (Linux); "" where the kernel does not expose one."""
    try:
        return _BOOT_ID_PATH.read_text().strip()
    except OSError:
        return ""


async def start_process_group(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    merge_stderr: bool = True,
) -> asyncio.subprocess.Process:
    """Start `args` as the leader of a new session and process group; stdout (and stderr) piped."""
    return await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
        start_new_session=True,
    )


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in the group; zombies can't run and may never be reaped in containers."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass  # some member belongs to another user; still look
    members: list[int] = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


async def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Poll until no live process is left in the group; False if some survive `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if not await asyncio.to_thread(group_members, pgid):
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_POLL_SECONDS)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # already gone


async def kill_process_group(pgid: int, grace_seconds: float) -> None:
    """SIGTERM the whole group, give it `grace_seconds` to exit, then SIGKILL what is left."""
    _signal_group(pgid, signal.SIGTERM)
    if not await wait_group_gone(pgid, grace_seconds):
        _signal_group(pgid, signal.SIGKILL)
        await wait_group_gone(pgid, ORPHAN_WAIT_SECONDS)


def _is_recorded_leader(record: ProcessGroupRecord) -> bool:
    if record.host != socket.gethostname() or record.boot_id != read_boot_id():
        return False
    try:
        leader = psutil.Process(record.leader_pid)
        same_start = abs(leader.create_time() - record.leader_start_time) < _START_TIME_TOLERANCE
        return same_start and os.getpgid(record.leader_pid) == record.pgid
    except (psutil.Error, ProcessLookupError):
        return False


async def kill_recorded_orphans(record: ProcessGroupRecord) -> bool:
    """Kill the group an earlier attempt left behind, if (and only if) it is provably that group.

    Returns whether a group was killed. Anything that does not match exactly (another host, a
    reboot, a reused pid) is left alone: it may be someone else's process.
    """
    if not await asyncio.to_thread(_is_recorded_leader, record):
        return False
    structlog.get_logger().warning("process.orphans_killed", pgid=record.pgid, leader_pid=record.leader_pid)
    _signal_group(record.pgid, signal.SIGKILL)
    await wait_group_gone(record.pgid, ORPHAN_WAIT_SECONDS)
    return True
