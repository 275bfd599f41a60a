"""Load scenarios over any platform file whose delivery is `sync`, with client-side accounting.

Each scenario logs in (every login a device), sets up conversations through the file's own
operations, drives load at a fixed rate (open loop: a send that cannot start because `max_inflight`
requests are already waiting is counted as dropped, like k6's dropped iterations) and returns
plain figures: no database of the platform is read. The evidence is the client's own:

- every message the platform acknowledged must reach every device of every member of its
  conversation exactly once (none lost, none duplicated), byte-exact (SHA-256 of the decoded
  payload against the sent bytes), never a device of a user who was not a member (leaked), and,
  for a participant removed under load, never a message sent after the removal was acknowledged;
- latencies: the send's HTTP round trip, and end-to-end from the start of the send request to
  the sync answer that carried it to a device.

`run_messages` (T1/T3/T4/T5/T11/T12/T14), `run_crud` (T2), `run_logins` (T6), `largest_payload`
(T5). Results are JSON-able dicts; the activities in `chaosmessaging.actions.platform_load` store
them and the probes in `chaosmessaging.probes.platform_results` judge them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaosmessaging.platform.client import PlatformClient, Reply, Session
from chaosmessaging.platform.schema import Platform
from chaosmessaging.platform.sync import SyncDevice

__all__ = [
    "RigFailure",
    "MessageRunSpec",
    "run_messages",
    "run_crud",
    "run_logins",
    "largest_payload",
    "percentile",
]


class RigFailure(RuntimeError):
    """Our side failed (logins or setup of the load-test users), not the platform under test."""


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def _http(max_connections: int = 1000) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=10.0),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=200),
    )


async def _gather_limited(coros: list, limit: int) -> list:
    gate = asyncio.Semaphore(limit)

    async def one(coro):
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def login_devices(
    client: PlatformClient,
    users: int,
    devices_per_user: int,
    prefix: str,
    password: str,
    tag: str,
    concurrency: int = 8,
) -> dict[int, list[Session]]:
    """Log every device in (user n, device k = login `tag-u<n>-d<k>`); RigFailure on a failure."""
    jobs = [
        client.login(n, prefix, password, f"{tag}-u{n}-d{k}")
        for n in range(users)
        for k in range(devices_per_user)
    ]
    results = await _gather_limited(jobs, concurrency)
    sessions: dict[int, list[Session]] = {n: [] for n in range(users)}
    for i, result in enumerate(results):
        if isinstance(result, Reply):
            n = i // devices_per_user
            raise RigFailure(
                f"login of load-test user {prefix}-{n} failed ({result.status} {result.outcome}"
                f"{' ' + result.error if result.error else ''}): are {users} users registered "
                "(CHAOSMESSAGING_LOADTEST_USERS at `stack up`) with this load-test password?"
            )
        sessions[i // devices_per_user].append(result)
    return sessions


@dataclass
class Conversation:
    id: str
    creator: int
    members: list[int]


async def make_conversations(
    client: PlatformClient, sessions: dict[int, list[Session]], count: int, size: int, tag: str
) -> list[Conversation]:
    """`count` conversations of `size` members: created by user c % users, then each other
    member added (and joined, when the platform needs the member to join)."""
    users = len(sessions)
    size = max(1, min(size, users))
    out: list[Conversation] = []

    async def one(c: int) -> Conversation:
        creator = c % users
        owner = sessions[creator][0]
        made = await client.call(
            "conversations.create", {"title": f"{tag}-c{c}", "participants": []}, owner
        )
        if not made.ok:
            raise RigFailure(
                f"creating conversation {c} failed: {made.status} {made.errcode or made.error}"
            )
        conv = Conversation(str(made.values["id"]), creator, [creator])
        for j in range(1, size):
            member = (creator + j) % users
            await add_member(client, conv, member, owner, sessions[member][0])
        return conv

    out = await _gather_limited([one(c) for c in range(count)], 4)
    return out


async def add_member(
    client: PlatformClient, conv: Conversation, member: int, owner: Session, joiner: Session
) -> None:
    values = {"conversation_id": conv.id, "user_id": joiner.user_id}
    added = await client.call("participants.add", values, owner)
    if not added.ok:
        raise RigFailure(
            f"adding {joiner.user} to {conv.id} failed: {added.status} {added.errcode}"
        )
    if client.platform.participants.join is not None:
        joined = await client.call("participants.join", values, joiner)
        if not joined.ok:
            raise RigFailure(
                f"{joiner.user} joining {conv.id} failed: {joined.status} {joined.errcode}"
            )
    conv.members.append(member)


@dataclass
class MessageRunSpec:
    label: str
    run_id: str
    prefix: str
    password: str
    users: int = 4
    devices_per_user: int = 1
    conversations: int = 2
    participants: int = 2
    rate: float = 10.0
    duration_s: float = 10.0
    payload_bytes: int = 1024
    settle_s: float = 15.0
    removals: int = 0  # participants removed under load (T3), spread over the duration
    max_inflight: int = 256
    metrics_url: str | None = None  # Prometheus exposition to sample RSS from
    memory_metric: str | None = "process_resident_memory_bytes"
    extra: dict[str, Any] = field(default_factory=dict)
    # called once, when the devices are synced and the first send is about to start
    on_load_start: Any = None


@dataclass
class Sent:
    client_msg_id: str
    conversation_id: str
    index: int
    started: float
    acked: float | None = None
    status: int | None = None
    outcome: str = ""
    errcode: str = ""
    event_id: str | None = None
    sha256: str = ""
    size: int = 0


async def _sample_memory(
    http: httpx.AsyncClient, url: str, metric: str, stop: asyncio.Event, out: list
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    while not stop.is_set():
        try:
            answer = await http.get(url, timeout=5)
            for family in text_string_to_metric_families(answer.text):
                for sample in family.samples:
                    if sample.name == metric:
                        out.append((time.time(), sample.value))
        except (httpx.HTTPError, ValueError):
            pass
        try:
            await asyncio.wait_for(stop.wait(), 2.0)
        except TimeoutError:
            pass


def memory_growth(samples: list[tuple[float, float]], window: float = 0.2) -> dict:
    """Mean of the last `window` of samples over the mean of the first, as a fraction."""
    if len(samples) < 4:
        return {"samples": len(samples), "growth": None}
    k = max(1, int(len(samples) * window))
    first = sum(v for _, v in samples[:k]) / k
    last = sum(v for _, v in samples[-k:]) / k
    return {
        "samples": len(samples),
        "first_bytes": round(first),
        "last_bytes": round(last),
        "growth": round((last - first) / first, 4) if first else None,
    }


async def open_loop(
    rate: float,
    total: int,
    max_inflight: int,
    job: Callable[[int], Awaitable[None]],
    beside: Callable[[int], Awaitable[None] | None] | None = None,
) -> int:
    """Start `job(i)` at ``i / rate`` seconds for each of `total` arrivals (open loop: an arrival
    that finds `max_inflight` jobs still running is dropped, like k6's dropped iterations) and
    whatever `beside(i)` returns for that arrival, dropped or not; wait for them all. The number
    of dropped arrivals."""
    inflight, dropped = 0, 0
    pending: list[asyncio.Task] = []

    async def counted(i: int) -> None:
        nonlocal inflight
        await job(i)
        inflight -= 1

    t0 = time.perf_counter()
    for i in range(total):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        extra = beside(i) if beside is not None else None
        if extra is not None:
            pending.append(asyncio.create_task(extra))
        if inflight >= max_inflight:
            dropped += 1
            continue
        inflight += 1
        pending.append(asyncio.create_task(counted(i)))
    await asyncio.gather(*pending)
    return dropped


class MemorySampler:
    """The server's memory (`metric` of the Prometheus exposition at `url`) every 2 s until
    `stop` is set; nothing when either is None."""

    def __init__(
        self, http: httpx.AsyncClient, url: str | None, metric: str | None, stop: asyncio.Event
    ) -> None:
        self.samples: list[tuple[float, float]] = []
        self.task = (
            asyncio.create_task(_sample_memory(http, url, metric, stop, self.samples))
            if url and metric
            else None
        )

    async def join(self) -> dict:
        """Wait for the sampler (its `stop` must be set); `memory_growth` of its samples."""
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        return memory_growth(self.samples)


async def run_messages(platform: Platform, spec: MessageRunSpec) -> dict:
    """Devices on sync, messages sent at `rate` for `duration_s`, then settle: the figures."""
    return await MessageRun(platform, spec).run()


class MessageRun:
    """One message run of `run_messages`: log in, set up the conversations, start every device's
    sync, send (and remove members) at the spec's rate, settle, and account for every delivery
    on the client side. ``await MessageRun(platform, spec).run()`` gives the figures."""

    def __init__(self, platform: Platform, spec: MessageRunSpec) -> None:
        self.platform, self.spec = platform, spec
        self.tag = f"{spec.label}-{spec.run_id[-6:]}"
        self.rng = random.Random(spec.run_id)
        self.sent: list[Sent] = []
        self.removals: list[dict] = []
        self.removed_from: dict[str, dict[int, dict]] = {}
        self.sessions: dict[int, list[Session]] = {}
        self.convs: list[Conversation] = []
        self.devices: list[SyncDevice] = []
        self.client: PlatformClient | None = None

    async def run(self) -> dict:
        spec = self.spec
        async with _http() as http:
            self.client = PlatformClient(self.platform, http)
            t_setup = time.time()
            await self._set_up()
            setup_s = time.time() - t_setup
            self.devices = [
                SyncDevice(self.platform, s, http) for ss in self.sessions.values() for s in ss
            ]
            stop = asyncio.Event()
            tasks = [asyncio.create_task(d.run(stop)) for d in self.devices]
            memory = MemorySampler(http, spec.metrics_url, spec.memory_metric, stop)
            await self._devices_started(stop)
            total = int(spec.rate * spec.duration_s)
            load_started = time.time()
            if spec.on_load_start is not None:
                spec.on_load_start()
            dropped = await open_loop(
                spec.rate, total, spec.max_inflight, self._send, self._removal_at(total)
            )
            load_s = time.time() - load_started
            members_at_end = {c.id: set(c.members) for c in self.convs}
            expected = self._expected_pairs()
            settled_s = await self._settle(expected)
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            growth = await memory.join()
        timings = {"setup_s": setup_s, "load_s": load_s, "settled_s": settled_s}
        return {
            **self._head(timings, load_started, members_at_end),
            "attempted": total,
            "dropped_sends": dropped,
            **_send_figures(self.sent),
            **self._delivery_figures(expected),
            "memory": growth,
        }

    async def _set_up(self) -> None:
        spec = self.spec
        self.sessions = await login_devices(
            self.client, spec.users, spec.devices_per_user, spec.prefix, spec.password, self.tag
        )
        self.convs = await make_conversations(
            self.client, self.sessions, spec.conversations, spec.participants, self.tag
        )
        self.removed_from = {c.id: {} for c in self.convs}

    async def _devices_started(self, stop: asyncio.Event) -> None:
        devices = self.devices
        try:
            await asyncio.wait_for(asyncio.gather(*(d.started.wait() for d in devices)), 120)
        except TimeoutError:
            stop.set()
            raise RigFailure(
                f"{sum(not d.started.is_set() for d in devices)} of {len(devices)} devices got no "
                "answer to their initial sync within 120 s"
            ) from None

    def _removal_at(self, total: int) -> Callable[[int], Awaitable[None] | None]:
        """For `open_loop`: the removals (T3) spread evenly over the `total` sends."""
        spec = self.spec
        at = {int(total * (k + 1) / (spec.removals + 1)): k for k in range(spec.removals)}
        return lambda i: self._remove(at[i]) if i in at else None

    async def _send(self, i: int) -> None:
        spec = self.spec
        conv = self.convs[i % len(self.convs)]
        owner = self.sessions[conv.creator][0]
        payload = self.rng.randbytes(spec.payload_bytes)
        record = Sent(
            client_msg_id=f"{spec.run_id}/{spec.label}:{i}",
            conversation_id=conv.id,
            index=i,
            started=time.time(),
            sha256=hashlib.sha256(payload).hexdigest(),
            size=len(payload),
        )
        self.sent.append(record)
        values = {
            "conversation_id": conv.id,
            "client_msg_id": record.client_msg_id,
            "txn_id": f"{self.tag}-{i}",
            "ciphertext": _encoded(payload, self.platform),
        }
        reply = await self.client.call("send", values, owner)
        record.acked = time.time() if reply.ok else None
        record.status, record.outcome, record.errcode = (
            reply.status,
            reply.outcome,
            reply.errcode or reply.error[:80],
        )
        record.event_id = reply.values.get("id")

    async def _remove(self, k: int) -> None:
        candidates = [c for c in self.convs if len(c.members) > 1]
        if not candidates:
            return
        conv = candidates[k % len(candidates)]
        member = conv.members[-1]
        conv.members.remove(member)
        owner = self.sessions[conv.creator][0]
        victim = self.sessions[member][0]
        entry = {"conversation_id": conv.id, "user": victim.user, "requested": time.time()}
        reply = await self.client.call(
            "participants.remove",
            {"conversation_id": conv.id, "user_id": victim.user_id},
            owner,
        )
        entry.update(acked=time.time() if reply.ok else None, status=reply.status)
        self.removals.append(entry)
        self.removed_from[conv.id][member] = entry

    @property
    def all_members(self) -> dict[str, set[int]]:
        """Every user who was a member of each conversation during the run."""
        return {c.id: set(c.members) | set(self.removed_from[c.id]) for c in self.convs}

    def _expected_pairs(self) -> set[tuple[str, str]]:
        """(message, device) pairs that must arrive: every acknowledged message to every device
        of every member, except members whose removal had begun before it was acknowledged."""
        all_members = self.all_members
        devices_of = {n: [s.device for s in ss] for n, ss in self.sessions.items()}
        pairs = set()
        for m in self.sent:
            if m.acked is None:
                continue
            for n in all_members[m.conversation_id]:
                gone = self.removed_from[m.conversation_id].get(n)
                if gone is not None and (gone["requested"] <= m.acked):
                    continue  # sent once the removal had begun: not expected (nor allowed
                    # once it was acknowledged, judged in the accounting)
                for dev in devices_of[n]:
                    pairs.add((m.client_msg_id, dev))
        return pairs

    async def _settle(self, expected: set[tuple[str, str]]) -> float:
        """Wait until every expected delivery arrived, or `settle_s` is up; the seconds waited."""
        settle_s = self.spec.settle_s
        deadline = time.time() + settle_s
        while time.time() < deadline and not expected <= {
            (r.client_msg_id, r.device) for d in self.devices for r in d.received
        }:
            await asyncio.sleep(0.2)
        return settle_s - max(0.0, deadline - time.time())

    def _head(self, timings: dict, load_started: float, members_at_end: dict) -> dict:
        spec, all_members = self.spec, self.all_members
        hidden = ("password", "extra", "metrics_url", "memory_metric", "on_load_start")
        return {
            "label": spec.label,
            "platform": self.platform.name,
            "spec": {k: v for k, v in spec.__dict__.items() if k not in hidden},
            **{k: round(v, 2) for k, v in timings.items()},
            "load_started": load_started,
            "devices": len(self.devices),
            "conversations": [
                {"id": c.id, "members": sorted(all_members[c.id])} for c in self.convs
            ],
            "members_at_end": {k: sorted(v) for k, v in members_at_end.items()},
        }

    def _delivery_figures(self, expected: set[tuple[str, str]]) -> dict:
        user_index = {s.user: n for n, ss in self.sessions.items() for s in ss}
        seen = _Deliveries(self.sent, self.all_members, self.removed_from, user_index)
        for d in self.devices:
            for r in d.received:
                seen.add(r, f"{self.spec.run_id}/{self.spec.label}:")
        counts, devices = seen.counts, self.devices
        lost = sorted(expected - set(counts))
        duplicated = [k for k, v in counts.items() if v > 1]
        e2e = [seen.first_at[k] - seen.by_id[k[0]].started for k in expected if k in seen.first_at]
        drops = [
            {"device": d.session.device, "at": x.at, "status": x.status, "error": x.error}
            for d in devices
            for x in d.dropped
        ]
        return {
            "expected_deliveries": len(expected),
            "delivered": len(set(counts) & expected),
            "lost": len(lost),
            "lost_examples": [list(k) for k in lost[:10]],
            "duplicated": len(duplicated),
            "duplicated_examples": [list(k) for k in duplicated[:10]],
            "leaked": len(seen.leaked),
            "leaked_examples": seen.leaked[:10],
            "wrong_conversation": len(seen.wrong_room),
            "corrupted": len(seen.corrupted),
            "corrupted_examples": seen.corrupted[:10],
            "removals": self.removals,
            "received_after_removal": len(seen.after_removal),
            "after_removal_examples": seen.after_removal[:10],
            "unacknowledged_but_delivered": len(seen.unacked_delivered),
            "e2e_p50_ms": _ms(percentile(e2e, 50)),
            "e2e_p95_ms": _ms(percentile(e2e, 95)),
            "e2e_p99_ms": _ms(percentile(e2e, 99)),
            "e2e_max_ms": _ms(max(e2e) if e2e else None),
            "sync_requests": sum(d.requests for d in devices),
            "dropped_sessions": len(drops),
            "dropped_session_examples": drops[:10],
            "sync_gaps": sum(d.gaps for d in devices),
        }


def _encoded(payload: bytes, platform: Platform) -> str:
    """`payload` in the platform's payload encoding (base64, else hex)."""
    if platform.send.payload_encoding == "base64":
        return base64.b64encode(payload).decode()
    return payload.hex()


def _send_figures(sent: list[Sent]) -> dict:
    """The sends' figures: counts, statuses, error codes, timeline and latency percentiles."""
    acked = [m for m in sent if m.acked is not None]
    send_lat = [m.acked - m.started for m in acked]
    failed = [m for m in sent if m.acked is None]
    return {
        "sent": len(sent),
        "acknowledged": len(acked),
        "failed_sends": len(failed),
        "send_error_rate": round(len(failed) / len(sent), 5) if sent else None,
        "send_statuses": dict(Counter(str(m.status) for m in sent)),
        "send_errcodes": dict(Counter(m.errcode for m in failed if m.errcode)),
        "send_timeline": [
            {"at": round(m.started, 3), "status": m.status, "ok": m.acked is not None}
            for m in sorted(sent, key=lambda m: m.started)
        ],
        "send_p50_ms": _ms(percentile(send_lat, 50)),
        "send_p95_ms": _ms(percentile(send_lat, 95)),
        "send_p99_ms": _ms(percentile(send_lat, 99)),
    }


class _Deliveries:
    """What the devices received of the run's messages, judged one record at a time: counts and
    first arrival per (message, device), and the leaked, corrupted, misplaced, after-removal and
    unacknowledged deliveries."""

    def __init__(
        self,
        sent: list[Sent],
        all_members: dict[str, set[int]],
        removed_from: dict[str, dict[int, dict]],
        user_index: dict[str, int],
    ) -> None:
        self.by_id = {m.client_msg_id: m for m in sent}
        self.all_members, self.removed_from, self.user_index = all_members, removed_from, user_index
        self.counts: Counter = Counter()
        self.first_at: dict[tuple[str, str], float] = {}
        self.leaked, self.corrupted, self.after_removal, self.wrong_room = [], [], [], []
        self.unacked_delivered: set[str] = set()

    def add(self, r: Any, prefix: str) -> None:
        if r.initial or not (r.client_msg_id or "").startswith(prefix):
            return
        key = (r.client_msg_id, r.device)
        self.counts[key] += 1
        self.first_at.setdefault(key, r.received_at)
        m = self.by_id.get(r.client_msg_id)
        if m is None:
            return
        n = self.user_index[r.user]
        if r.conversation_id != m.conversation_id:
            self.wrong_room.append({"id": r.client_msg_id, "device": r.device})
        if n not in self.all_members[m.conversation_id]:
            self.leaked.append({"id": r.client_msg_id, "device": r.device, "user": r.user})
        gone = self.removed_from[m.conversation_id].get(n)
        if gone is not None and gone.get("acked") is not None and m.started >= gone["acked"]:
            self.after_removal.append(
                {
                    "id": r.client_msg_id,
                    "device": r.device,
                    "sent_after_removal_s": round(m.started - gone["acked"], 3),
                }
            )
        if m.acked is None:
            self.unacked_delivered.add(r.client_msg_id)
        if r.sha256 != m.sha256 or r.size != m.size:
            self.corrupted.append({"id": r.client_msg_id, "device": r.device, "size": r.size})


async def run_crud(
    platform: Platform,
    label: str,
    run_id: str,
    prefix: str,
    password: str,
    users: int = 4,
    rate: float = 10.0,
    duration_s: float = 10.0,
    mix: dict[str, float] | None = None,
    foreign_read_every: int = 10,
    max_inflight: int = 128,
) -> dict:
    """Conversation CRUD at `rate` (plan T2 mix: 40 % create, 30 % list, 20 % update, 10 %
    delete), each user on its own conversations, and every `foreign_read_every`-th operation a
    deliberate read of another user's conversation (must be answered `forbidden`; an `ok` is a
    leak). Figures per operation: count, outcome counts, p50/p95 ms."""
    mix = mix or {"create": 0.4, "list": 0.3, "update": 0.2, "delete": 0.1}
    async with _http() as http:
        tag = f"{label}-{run_id[-6:]}"
        crud = CrudRun(PlatformClient(platform, http), tag, run_id, mix, foreign_read_every)
        await crud.set_up(users, prefix, password)
        total = int(rate * duration_s)
        t0 = time.perf_counter()
        dropped = await open_loop(rate, total, max_inflight, crud.one)
        elapsed = time.perf_counter() - t0
    return {
        "label": label,
        "platform": platform.name,
        "users": users,
        "rate": rate,
        "duration_s": duration_s,
        "elapsed_s": round(elapsed, 2),
        "attempted": total,
        "dropped": dropped,
        **_crud_figures(crud.ops, list(mix), elapsed),
    }


class CrudRun:
    """The operations of `run_crud`: each user on its own conversations, chosen by `mix`, and
    every `foreign_read_every`-th operation a read of another user's conversation. `ops` holds
    one row per answered operation (op, outcome, status, ms)."""

    def __init__(
        self,
        client: PlatformClient,
        tag: str,
        run_id: str,
        mix: dict[str, float],
        foreign_read_every: int,
    ) -> None:
        self.client, self.tag, self.foreign_read_every = client, tag, foreign_read_every
        self.names, self.weights = list(mix), list(mix.values())
        self.rng = random.Random(run_id)
        self.ops: list[dict] = []
        self.sessions: dict[int, list[Session]] = {}
        self.own: dict[int, list[str]] = {}
        # conversation id -> the version last seen, when updates carry one (concurrency:)
        update = client.platform.conversations.update
        self.versioned = update is not None and update.concurrency is not None
        self.versions: dict[str, object] = {}

    async def set_up(self, users: int, prefix: str, password: str) -> None:
        """Log the users in, one conversation each to start with (so foreign reads have a
        target)."""
        client, tag = self.client, self.tag
        self.sessions = await login_devices(client, users, 1, prefix, password, tag)
        self.own = {n: [] for n in range(users)}
        for n in range(users):
            made = await client.call(
                "conversations.create",
                {"title": f"{tag}-seed{n}", "participants": []},
                self.sessions[n][0],
            )
            if not made.ok:
                raise RigFailure(f"creating a seed conversation failed: {made.status}")
            self.own[n].append(str(made.values["id"]))
            self.versions[str(made.values["id"])] = made.values.get("version")

    async def one(self, i: int) -> None:
        users, every = len(self.sessions), self.foreign_read_every
        n = i % users
        if every and i % every == every - 1 and await self._foreign_read(n):
            return
        op = self.rng.choices(self.names, self.weights)[0]
        own, me, tag = self.own[n], self.sessions[n][0], self.tag
        if op in ("update", "delete") and len(own) <= 1:
            op = "create"
        if op == "create":
            r = await self.client.call(
                "conversations.create", {"title": f"{tag}-{i}", "participants": []}, me
            )
            if r.ok:
                own.append(str(r.values["id"]))
                self.versions[str(r.values["id"])] = r.values.get("version")
        elif op == "list":
            r = await self.client.call("conversations.list", {}, me)
        elif op == "update":
            target = self.rng.choice(own)
            values = {"conversation_id": target, "title": f"{tag}-u{i}"}
            if self.versioned:  # optimistic concurrency: send the version last seen
                values["version"] = self.versions.get(target)
            r = await self.client.call("conversations.update", values, me)
            if self.versioned and r.ok and r.values.get("version") is not None:
                self.versions[target] = r.values["version"]
        else:
            target = own.pop(self.rng.randrange(1, len(own)))
            r = await self.client.call("conversations.delete", {"conversation_id": target}, me)
        self._answered(op, r)

    async def _foreign_read(self, n: int) -> bool:
        """Read another user's conversation as user `n` (must be forbidden); False when there is
        none to read."""
        users = len(self.sessions)
        other = (n + 1 + self.rng.randrange(users - 1)) % users if users > 1 else n
        target = self.own[other][0] if self.own[other] else None
        if target is None or other == n:
            return False
        me = self.sessions[n][0]
        r = await self.client.call("conversations.get", {"conversation_id": target}, me)
        self._answered("foreign_read", r)
        return True

    def _answered(self, op: str, r: Reply) -> None:
        self.ops.append(
            {"op": op, "outcome": r.outcome, "status": r.status, "ms": r.elapsed_s * 1000}
        )


def _crud_figures(ops: list[dict], names: list[str], elapsed: float) -> dict:
    per_op: dict[str, dict] = {}
    for name in [*names, "foreign_read"]:
        rows = [o for o in ops if o["op"] == name]
        lat = [o["ms"] for o in rows]
        per_op[name] = {
            "count": len(rows),
            "outcomes": dict(Counter(o["outcome"] for o in rows)),
            "statuses": dict(Counter(str(o["status"]) for o in rows)),
            "p50_ms": None if not lat else round(percentile(lat, 50), 1),
            "p95_ms": None if not lat else round(percentile(lat, 95), 1),
        }
    normal = [o for o in ops if o["op"] != "foreign_read"]
    errors = [o for o in normal if o["outcome"] != "ok"]
    foreign = [o for o in ops if o["op"] == "foreign_read"]
    all_lat = [o["ms"] for o in normal]
    return {
        "operations": len(ops),
        "achieved_rate": round(len(ops) / elapsed, 2) if elapsed else None,
        "error_rate": round(len(errors) / len(normal), 5) if normal else None,
        "p95_ms": None if not all_lat else round(percentile(all_lat, 95), 1),
        "per_op": per_op,
        "foreign_reads": len(foreign),
        "foreign_forbidden": sum(o["outcome"] == "forbidden" for o in foreign),
        "foreign_leaks": sum(o["outcome"] == "ok" for o in foreign),
        "foreign_other": sum(o["outcome"] not in ("ok", "forbidden") for o in foreign),
    }


async def run_logins(
    platform: Platform,
    label: str,
    run_id: str,
    prefix: str,
    password: str,
    users: int = 4,
    rate: float = 5.0,
    duration_s: float = 10.0,
    max_inflight: int = 256,
    metrics_url: str | None = None,
    memory_metric: str | None = "process_resident_memory_bytes",
) -> dict:
    """Logins at `rate` for `duration_s`, round-robin over the load-test users (each one a new
    device): success rate, p50/p95/p99 latency, dropped logins, server memory samples."""
    async with _http() as http:
        client = PlatformClient(platform, http)
        tag = f"{label}-{run_id[-6:]}"
        results: list[tuple[bool, float, int | None]] = []
        stop = asyncio.Event()
        memory = MemorySampler(http, metrics_url, memory_metric, stop)

        async def one(i: int) -> None:
            t = time.perf_counter()
            got = await client.login(i % users, prefix, password, f"{tag}-{i}")
            ok = isinstance(got, Session)
            results.append((ok, time.perf_counter() - t, None if ok else got.status))

        total = int(rate * duration_s)
        t0 = time.perf_counter()
        dropped = await open_loop(rate, total, max_inflight, one)
        elapsed = time.perf_counter() - t0
        stop.set()
        growth = await memory.join()
    lat = [d for ok, d, _ in results if ok]
    done = len(results)
    return {
        "label": label,
        "platform": platform.name,
        "rate": rate,
        "duration_s": duration_s,
        "elapsed_s": round(elapsed, 2),
        "attempted": total,
        "dropped": dropped,
        "completed": done,
        "succeeded": len(lat),
        "success_rate": round(len(lat) / total, 5) if total else None,
        "achieved_rate": round(len(lat) / elapsed, 2) if elapsed else None,
        "failed_statuses": dict(Counter(str(s) for ok, _, s in results if not ok)),
        "p50_ms": _ms(percentile(lat, 50)),
        "p95_ms": _ms(percentile(lat, 95)),
        "p99_ms": _ms(percentile(lat, 99)),
        "memory": growth,
    }


class SizeProbe:
    """Real sends of growing and shrinking payloads into one conversation: `probes` keeps each
    answer, `payloads` the accepted payloads by size."""

    def __init__(
        self, client: PlatformClient, conv: Conversation, me: Session, prefix: str, tag: str
    ) -> None:
        self.client, self.conv, self.me, self.prefix, self.tag = client, conv, me, prefix, tag
        self.probes: list[dict] = []
        self.payloads: dict[int, bytes] = {}

    def message_id(self, size: int) -> str:
        return f"{self.prefix}:size-{size}"

    async def accepts(self, size: int) -> bool:
        payload = os.urandom(size)
        text = _encoded(payload, self.client.platform)
        r = await self.client.call(
            "send",
            {
                "conversation_id": self.conv.id,
                "client_msg_id": self.message_id(size),
                "txn_id": f"{self.tag}-{size}",
                "ciphertext": text,
            },
            self.me,
        )
        self.probes.append(
            {
                "bytes": size,
                "encoded": len(text),
                "status": r.status,
                "outcome": r.outcome,
                "errcode": r.errcode,
            }
        )
        if r.outcome not in ("ok", "too_large"):
            raise RigFailure(f"a {size}-byte send was answered {r.status} {r.errcode}")
        if r.ok:
            self.payloads[size] = payload
        return r.ok

    async def bisect(self, high: int) -> int:
        """The largest accepted size up to `high` (0 when even 1 byte is refused)."""
        low, top = 0, high
        if await self.accepts(high):
            return high
        while top - low > 1:
            mid = (low + top) // 2
            if await self.accepts(mid):
                low = mid
            else:
                top = mid
        return low


async def _read_back(reader: SyncDevice, wanted: set[str], within_s: float) -> dict[str, Any]:
    """The records `reader` receives of the messages `wanted` within `within_s` seconds."""
    deadline = time.time() + within_s
    got: dict[str, Any] = {}
    while time.time() < deadline and wanted - set(got):
        await reader.poll_once(timeout_ms=2000)
        for r in reader.received:
            if r.client_msg_id in wanted:
                got[r.client_msg_id] = r
    return got


async def largest_payload(
    platform: Platform,
    label: str,
    run_id: str,
    prefix: str,
    password: str,
    high: int = 1 << 20,
) -> dict:
    """The largest payload (raw bytes, before the file's payload encoding) the platform accepts
    in one message, by bisection between 1 byte and `high`: each probe is one real send, and
    the answers (accepted / too_large / other) are kept. The largest accepted message is then
    read back by a second device of the same user through the delivery channel and compared
    byte for byte."""
    async with _http() as http:
        client = PlatformClient(platform, http)
        tag = f"{label}-{run_id[-6:]}"
        sessions = await login_devices(client, 1, 2, prefix, password, tag)
        [conv] = await make_conversations(client, sessions, 1, 1, tag)
        reader = SyncDevice(platform, sessions[0][1], http)
        await reader.poll_once()
        sizes = SizeProbe(client, conv, sessions[0][0], f"{run_id}/{label}", tag)
        low = await sizes.bisect(high)
        # read back what was accepted: every accepted probe must come back byte-exact
        wanted = {sizes.message_id(s): p for s, p in sizes.payloads.items()}
        got = await _read_back(reader, set(wanted), 30)
        exact = sum(
            1
            for cid, p in wanted.items()
            if cid in got and got[cid].sha256 == hashlib.sha256(p).hexdigest()
        )
    probes = sizes.probes
    refused = [p for p in probes if p["outcome"] == "too_large"]
    return {
        "label": label,
        "platform": platform.name,
        "largest_accepted_bytes": low or None,
        "largest_accepted_encoded": max(
            (p["encoded"] for p in probes if p["outcome"] == "ok"), default=None
        ),
        "smallest_refused_bytes": min((p["bytes"] for p in refused), default=None),
        "refused_errcode": refused[0]["errcode"] if refused else None,
        "probes": probes,
        "accepted_read_back": len(got),
        "accepted_byte_exact": exact,
        "accepted_sent": len(wanted),
    }
