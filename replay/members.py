"""Who consumes: the members of a consumer group, and stopping them before offsets move.

Kafka refuses an offset commit from outside a group that has members (UNKNOWN_MEMBER_ID), and a
running worker would overwrite a rewind with its own commits anyway. So offsets move only while
the group is empty. A Faust worker announces its web address in its group metadata; a member
whose address is on this machine is stopped here by the process listening on that port (SIGTERM,
a clean shutdown that leaves the group), so only members of *this* group on *this* cluster are
touched. Members elsewhere are stopped by their supervisor (``docker compose stop worker``), or
removed from the group with ``--force`` (they rejoin at once and read the new offsets).
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import time
import urllib.parse
from dataclasses import dataclass

import psutil
from kafka.admin import KafkaAdminClient, MemberToRemove

INACTIVE_STATES = frozenset({"Empty", "Dead"})
_URL = re.compile(r'"url"\s*:\s*"([^"]+)"')


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str
    assigned: tuple[str, ...]
    url: str | None = None  # a Faust worker's web address, from its subscription metadata

    def describe(self) -> str:
        return f"{self.client_id} on {self.host.lstrip('/')} ({', '.join(self.assigned) or 'no partitions'})"


@dataclass(frozen=True)
class GroupState:
    group: str
    state: str
    members: tuple[Member, ...]

    @property
    def active(self) -> bool:
        return self.state not in INACTIVE_STATES and bool(self.members)


def describe_group(admin: KafkaAdminClient, group: str) -> GroupState:
    found = admin.describe_groups([group])[group]
    members = []
    for member in found.get("members") or []:
        assignment = member.get("member_assignment")
        assigned = []
        if isinstance(assignment, dict):
            for item in assignment.get("assigned_partitions") or []:
                assigned.append(f"{item['topic']}{sorted(item['partitions'])}")
        metadata = member.get("member_metadata") or ""
        text = metadata.decode("latin-1") if isinstance(metadata, bytes) else str(metadata)
        url = _URL.search(text)
        members.append(
            Member(
                member["member_id"],
                member.get("client_id", ""),
                member.get("client_host", ""),
                tuple(assigned),
                url.group(1) if url else None,
            )
        )
    return GroupState(group, found.get("group_state") or "Dead", tuple(members))


def wait_inactive(admin: KafkaAdminClient, group: str, timeout_s: float) -> GroupState:
    """Until the group has no members, or the timeout; returns the last state seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = describe_group(admin, group)
        if not state.active or time.monotonic() >= deadline:
            return state
        time.sleep(0.3)


def local_processes(state: GroupState) -> list[psutil.Process]:
    """The processes of this machine that are members: they listen on the port their metadata names.

    Only members whose connection the coordinator saw come from this machine count, so a worker
    elsewhere that happens to announce ``127.0.0.1`` never stops a process here.
    """
    addresses = {a.address for nics in psutil.net_if_addrs().values() for a in nics}
    web_hosts = addresses | {"localhost", "0.0.0.0", socket.gethostname()}
    ports = set()
    for member in state.members:
        address = urllib.parse.urlparse(member.url or "")
        if member.host.lstrip("/") in addresses and address.hostname in web_hosts and address.port:
            ports.add(address.port)
    pids = {c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port in ports}
    return [psutil.Process(pid) for pid in sorted(p for p in pids if p)]


def stop_local_workers(admin: KafkaAdminClient, group: str, timeout_s: float = 60.0) -> tuple[list[int], GroupState]:
    """SIGTERM this machine's members of ``group``, wait for them to exit and the group to empty."""
    procs = local_processes(describe_group(admin, group))
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
    _gone, alive = psutil.wait_procs(procs, timeout=timeout_s)
    if alive:
        raise RuntimeError(f"worker process(es) {[p.pid for p in alive]} did not stop within {timeout_s:.0f} s")
    return [p.pid for p in procs], wait_inactive(admin, group, timeout_s)


def remove_members(admin: KafkaAdminClient, state: GroupState, reason: str) -> None:
    """Make the coordinator forget the members (they rejoin on their next heartbeat)."""
    if state.members:
        admin.remove_group_members(
            state.group, [MemberToRemove(member_id=m.member_id, reason=reason) for m in state.members]
        )
