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
        made = await client.call("conversations.create", {"title": f"{tag}-c{c}"}, owner)
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


async def run_messages(platform: Platform, spec: MessageRunSpec) -> dict:
    """Devices on sync, messages sent at `rate` for `duration_s`, then settle: the figures."""
    async with _http() as http:
        client = PlatformClient(platform, http)
        tag = f"{spec.label}-{spec.run_id[-6:]}"
        t_setup = time.time()
        sessions = await login_devices(
            client, spec.users, spec.devices_per_user, spec.prefix, spec.password, tag
        )
        convs = await make_conversations(
            client, sessions, spec.conversations, spec.participants, tag
        )
        setup_s = time.time() - t_setup
        devices = [SyncDevice(platform, s, http) for ss in sessions.values() for s in ss]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(d.run(stop)) for d in devices]
        memory: list = []
        sampler = None
        if spec.metrics_url and spec.memory_metric:
            sampler = asyncio.create_task(
                _sample_memory(http, spec.metrics_url, spec.memory_metric, stop, memory)
            )
        try:
            await asyncio.wait_for(asyncio.gather(*(d.started.wait() for d in devices)), 120)
        except TimeoutError:
            stop.set()
            raise RigFailure(
                f"{sum(not d.started.is_set() for d in devices)} of {len(devices)} devices got no "
                "answer to their initial sync within 120 s"
            ) from None
        sent: list[Sent] = []
        removals: list[dict] = []
        removed_from: dict[str, dict[int, dict]] = {c.id: {} for c in convs}
        dropped_sends = 0
        inflight = 0
        rng = random.Random(spec.run_id)

        async def send_one(i: int) -> None:
            nonlocal inflight
            conv = convs[i % len(convs)]
            owner = sessions[conv.creator][0]
            payload = rng.randbytes(spec.payload_bytes)
            record = Sent(
                client_msg_id=f"{spec.run_id}/{spec.label}:{i}",
                conversation_id=conv.id,
                index=i,
                started=time.time(),
                sha256=hashlib.sha256(payload).hexdigest(),
                size=len(payload),
            )
            sent.append(record)
            encoding = platform.send.payload_encoding
            text = base64.b64encode(payload).decode() if encoding == "base64" else payload.hex()
            values = {
                "conversation_id": conv.id,
                "client_msg_id": record.client_msg_id,
                "txn_id": f"{tag}-{i}",
                "ciphertext": text,
            }
            reply = await client.call("send", values, owner)
            record.acked = time.time() if reply.ok else None
            record.status, record.outcome, record.errcode = (
                reply.status,
                reply.outcome,
                reply.errcode or reply.error[:80],
            )
            record.event_id = reply.values.get("id")
            inflight -= 1

        async def remove_one(k: int) -> None:
            candidates = [c for c in convs if len(c.members) > 1]
            if not candidates:
                return
            conv = candidates[k % len(candidates)]
            member = conv.members[-1]
            conv.members.remove(member)
            owner = sessions[conv.creator][0]
            victim = sessions[member][0]
            entry = {"conversation_id": conv.id, "user": victim.user, "requested": time.time()}
            reply = await client.call(
                "participants.remove",
                {"conversation_id": conv.id, "user_id": victim.user_id},
                owner,
            )
            entry.update(acked=time.time() if reply.ok else None, status=reply.status)
            removals.append(entry)
            removed_from[conv.id][member] = entry

        total = int(spec.rate * spec.duration_s)
        removal_at = (
            {int(total * (k + 1) / (spec.removals + 1)): k for k in range(spec.removals)}
            if spec.removals
            else {}
        )
        pending: list[asyncio.Task] = []
        t0 = time.perf_counter()
        load_started = time.time()
        if spec.on_load_start is not None:
            spec.on_load_start()
        for i in range(total):
            delay = t0 + i / spec.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if i in removal_at:
                pending.append(asyncio.create_task(remove_one(removal_at[i])))
            if inflight >= spec.max_inflight:
                dropped_sends += 1
                continue
            inflight += 1
            pending.append(asyncio.create_task(send_one(i)))
        await asyncio.gather(*pending)
        load_s = time.time() - load_started

        # settle: wait until every expected delivery arrived (or the time is up)
        members_at_end = {c.id: set(c.members) for c in convs}
        all_members = {c.id: set(c.members) | set(removed_from[c.id]) for c in convs}
        user_index = {s.user: n for n, ss in sessions.items() for s in ss}
        devices_of = {n: [s.device for s in ss] for n, ss in sessions.items()}

        def expected_pairs() -> set[tuple[str, str]]:
            pairs = set()
            for m in sent:
                if m.acked is None:
                    continue
                for n in all_members[m.conversation_id]:
                    gone = removed_from[m.conversation_id].get(n)
                    if gone is not None and (gone["requested"] <= m.acked):
                        continue  # sent once the removal had begun: not expected (nor allowed
                        # once it was acknowledged, judged below)
                    for dev in devices_of[n]:
                        pairs.add((m.client_msg_id, dev))
            return pairs

        def received_pairs() -> set[tuple[str, str]]:
            return {(r.client_msg_id, r.device) for d in devices for r in d.received}

        expected = expected_pairs()
        settle_deadline = time.time() + spec.settle_s
        while time.time() < settle_deadline and not expected <= received_pairs():
            await asyncio.sleep(0.2)
        settled_s = spec.settle_s - max(0.0, settle_deadline - time.time())
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if sampler is not None:
            await asyncio.gather(sampler, return_exceptions=True)

    # accounting
    by_id = {m.client_msg_id: m for m in sent}
    prefix = f"{spec.run_id}/{spec.label}:"
    counts: Counter = Counter()
    first_at: dict[tuple[str, str], float] = {}
    leaked, corrupted, after_removal, wrong_room, unacked_delivered = [], [], [], [], set()
    for d in devices:
        for r in d.received:
            if r.initial or not (r.client_msg_id or "").startswith(prefix):
                continue
            key = (r.client_msg_id, r.device)
            counts[key] += 1
            first_at.setdefault(key, r.received_at)
            m = by_id.get(r.client_msg_id)
            if m is None:
                continue
            n = user_index[r.user]
            if r.conversation_id != m.conversation_id:
                wrong_room.append({"id": r.client_msg_id, "device": r.device})
            if n not in all_members[m.conversation_id]:
                leaked.append({"id": r.client_msg_id, "device": r.device, "user": r.user})
            gone = removed_from[m.conversation_id].get(n)
            if gone is not None and gone.get("acked") is not None and m.started >= gone["acked"]:
                after_removal.append(
                    {
                        "id": r.client_msg_id,
                        "device": r.device,
                        "sent_after_removal_s": round(m.started - gone["acked"], 3),
                    }
                )
            if m.acked is None:
                unacked_delivered.add(r.client_msg_id)
            if r.sha256 != m.sha256 or r.size != m.size:
                corrupted.append({"id": r.client_msg_id, "device": r.device, "size": r.size})
    lost = sorted(expected - set(counts))
    duplicated = [k for k, v in counts.items() if v > 1]
    e2e = [first_at[k] - by_id[k[0]].started for k in expected if k in first_at]
    acked = [m for m in sent if m.acked is not None]
    send_lat = [m.acked - m.started for m in acked]
    statuses = Counter(str(m.status) for m in sent)
    errcodes = Counter(m.errcode for m in sent if m.acked is None and m.errcode)
    failed = [m for m in sent if m.acked is None]
    drops = [
        {"device": d.session.device, "at": x.at, "status": x.status, "error": x.error}
        for d in devices
        for x in d.dropped
    ]
    return {
        "label": spec.label,
        "platform": platform.name,
        "spec": {
            k: v
            for k, v in spec.__dict__.items()
            if k not in ("password", "extra", "metrics_url", "memory_metric", "on_load_start")
        },
        "setup_s": round(setup_s, 2),
        "load_s": round(load_s, 2),
        "settled_s": round(settled_s, 2),
        "load_started": load_started,
        "devices": len(devices),
        "conversations": [{"id": c.id, "members": sorted(all_members[c.id])} for c in convs],
        "members_at_end": {k: sorted(v) for k, v in members_at_end.items()},
        "attempted": total,
        "dropped_sends": dropped_sends,
        "sent": len(sent),
        "acknowledged": len(acked),
        "failed_sends": len(failed),
        "send_error_rate": round(len(failed) / len(sent), 5) if sent else None,
        "send_statuses": dict(statuses),
        "send_errcodes": dict(errcodes),
        "send_timeline": [
            {"at": round(m.started, 3), "status": m.status, "ok": m.acked is not None}
            for m in sorted(sent, key=lambda m: m.started)
        ],
        "send_p50_ms": _ms(percentile(send_lat, 50)),
        "send_p95_ms": _ms(percentile(send_lat, 95)),
        "send_p99_ms": _ms(percentile(send_lat, 99)),
        "expected_deliveries": len(expected),
        "delivered": len(set(counts) & expected),
        "lost": len(lost),
        "lost_examples": [list(k) for k in lost[:10]],
        "duplicated": len(duplicated),
        "duplicated_examples": [list(k) for k in duplicated[:10]],
        "leaked": len(leaked),
        "leaked_examples": leaked[:10],
        "wrong_conversation": len(wrong_room),
        "corrupted": len(corrupted),
        "corrupted_examples": corrupted[:10],
        "removals": removals,
        "received_after_removal": len(after_removal),
        "after_removal_examples": after_removal[:10],
        "unacknowledged_but_delivered": len(unacked_delivered),
        "e2e_p50_ms": _ms(percentile(e2e, 50)),
        "e2e_p95_ms": _ms(percentile(e2e, 95)),
        "e2e_p99_ms": _ms(percentile(e2e, 99)),
        "e2e_max_ms": _ms(max(e2e) if e2e else None),
        "sync_requests": sum(d.requests for d in devices),
        "dropped_sessions": len(drops),
        "dropped_session_examples": drops[:10],
        "sync_gaps": sum(d.gaps for d in devices),
        "memory": memory_growth(memory),
    }


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
        client = PlatformClient(platform, http)
        tag = f"{label}-{run_id[-6:]}"
        sessions = await login_devices(client, users, 1, prefix, password, tag)
        own: dict[int, list[str]] = {n: [] for n in range(users)}
        # one conversation each to start with, so foreign reads have a target
        for n in range(users):
            made = await client.call(
                "conversations.create", {"title": f"{tag}-seed{n}"}, sessions[n][0]
            )
            if not made.ok:
                raise RigFailure(f"creating a seed conversation failed: {made.status}")
            own[n].append(str(made.values["id"]))
        rng = random.Random(run_id)
        ops: list[dict] = []
        inflight, dropped = 0, 0
        names = list(mix)
        weights = [mix[k] for k in names]

        async def one(i: int) -> None:
            nonlocal inflight
            n = i % users
            me = sessions[n][0]
            if foreign_read_every and i % foreign_read_every == foreign_read_every - 1:
                other = (n + 1 + rng.randrange(users - 1)) % users if users > 1 else n
                target = own[other][0] if own[other] else None
                if target is not None and other != n:
                    r = await client.call("conversations.get", {"conversation_id": target}, me)
                    ops.append(
                        {
                            "op": "foreign_read",
                            "outcome": r.outcome,
                            "status": r.status,
                            "ms": r.elapsed_s * 1000,
                        }
                    )
                    inflight -= 1
                    return
            op = rng.choices(names, weights)[0]
            if op in ("update", "delete") and len(own[n]) <= 1:
                op = "create"
            if op == "create":
                r = await client.call("conversations.create", {"title": f"{tag}-{i}"}, me)
                if r.ok:
                    own[n].append(str(r.values["id"]))
            elif op == "list":
                r = await client.call("conversations.list", {}, me)
            elif op == "update":
                target = rng.choice(own[n])
                r = await client.call(
                    "conversations.update",
                    {"conversation_id": target, "title": f"{tag}-u{i}"},
                    me,
                )
            else:
                target = own[n].pop(rng.randrange(1, len(own[n])))
                r = await client.call("conversations.delete", {"conversation_id": target}, me)
            ops.append(
                {"op": op, "outcome": r.outcome, "status": r.status, "ms": r.elapsed_s * 1000}
            )
            inflight -= 1

        total = int(rate * duration_s)
        tasks = []
        t0 = time.perf_counter()
        for i in range(total):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if inflight >= max_inflight:
                dropped += 1
                continue
            inflight += 1
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
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
        "label": label,
        "platform": platform.name,
        "users": users,
        "rate": rate,
        "duration_s": duration_s,
        "elapsed_s": round(elapsed, 2),
        "attempted": total,
        "dropped": dropped,
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
        inflight, dropped = 0, 0
        stop = asyncio.Event()
        memory: list = []
        sampler = None
        if metrics_url and memory_metric:
            sampler = asyncio.create_task(
                _sample_memory(http, metrics_url, memory_metric, stop, memory)
            )

        async def one(i: int) -> None:
            nonlocal inflight
            t = time.perf_counter()
            got = await client.login(i % users, prefix, password, f"{tag}-{i}")
            ok = isinstance(got, Session)
            results.append((ok, time.perf_counter() - t, None if ok else got.status))
            inflight -= 1

        total = int(rate * duration_s)
        tasks = []
        t0 = time.perf_counter()
        for i in range(total):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if inflight >= max_inflight:
                dropped += 1
                continue
            inflight += 1
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        stop.set()
        if sampler is not None:
            await asyncio.gather(sampler, return_exceptions=True)
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
        "memory": memory_growth(memory),
    }


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
        me = sessions[0][0]
        reader = SyncDevice(platform, sessions[0][1], http)
        await reader.poll_once()
        probes: list[dict] = []
        payloads: dict[int, bytes] = {}

        async def accepts(size: int) -> bool:
            payload = os.urandom(size)
            text = base64.b64encode(payload).decode()
            if platform.send.payload_encoding != "base64":
                text = payload.hex()
            cid = f"{run_id}/{label}:size-{size}"
            r = await client.call(
                "send",
                {
                    "conversation_id": conv.id,
                    "client_msg_id": cid,
                    "txn_id": f"{tag}-{size}",
                    "ciphertext": text,
                },
                me,
            )
            probes.append(
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
                payloads[size] = payload
            return r.ok

        low, top = 0, high
        if await accepts(high):
            low = high
        else:
            while top - low > 1:
                mid = (low + top) // 2
                if await accepts(mid):
                    low = mid
                else:
                    top = mid
        # read back what was accepted: every accepted probe must come back byte-exact
        deadline = time.time() + 30
        wanted = {f"{run_id}/{label}:size-{s}": p for s, p in payloads.items()}
        got: dict[str, Any] = {}
        while time.time() < deadline and set(wanted) - set(got):
            await reader.poll_once(timeout_ms=2000)
            for r in reader.received:
                if r.client_msg_id in wanted:
                    got[r.client_msg_id] = r
        exact = sum(
            1
            for cid, p in wanted.items()
            if cid in got and got[cid].sha256 == hashlib.sha256(p).hexdigest()
        )
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
