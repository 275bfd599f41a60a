"""Devices that account for every message they receive (client-side delivery accounting).

A *fleet* is a set of devices (user x device number) connected to the platform's delivery channel
as the platform file describes it (`delivery:`): a WebSocket (this module's own loop: path, how
the token is sent, which frame says ready / caught up, how to resume, where each fact is in a
frame), or another channel through a registered driver (`clients.drivers`: HTTP long-poll
``sync``, ``sse``). Whatever the channel, each message becomes a normalized record
(`drivers.normalize`) that the fleet checks the moment it arrives and writes as one JSON line to
the run's frames file (`frames_path`):

    {"kind": "frame", "device", "user", "seq", "message_id", "conversation_id", "client_msg_id",
     "accepted_at", "received_at", "latency_s", "sha256", "hash_ok", "mine"}

- ``mine``: the frame's conversation is one of the user's, as the API lists them to that user
  (GET /v1/conversations) — False is cross-conversation leakage;
- ``hash_ok``: the SHA-256 of the decoded ciphertext starts with the hash the sender put in the
  client message id (``<run>/<label>:<vu>-<iter>:<sha256 hex, 16 chars>``, k6/delivery_load.js) —
  False is corruption; None when the id carries no hash;
- ``latency_s``: received - accepted (same host clock: loopback only).

Connection events are lines too: ``{"kind": "open"|"close"|"reconnect", "device", "t", ...}``
(a close records its code, reason and who closed; a reconnect how long the device was without a
socket). A device whose socket ends for any reason but `stop()` reconnects with the platform's
resume parameter (reference: ``after=<seq of the last frame it saw>``), logging in again on 401.

The fleet runs on its own asyncio loop in a daemon thread, so a Chaos Toolkit action can start it
and return while the experiment injects faults (`chaosmessaging.actions.websocket`). Only that
thread writes the frames file. Hand-written on the `websockets` library: no maintained tool records
per-frame facts from many sockets (k6's VUs cannot write files).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chaosmessaging import runs
from chaosmessaging.clients.drivers import is_message, normalize, runner_for
from chaosmessaging.platform.schema import Platform, SendAs, WebSocketDelivery
from chaosmessaging.platform.templates import find_one
from chaosmessaging.util import stack_home

__all__ = ["Device", "Fleet", "frames_path", "read_frames", "ws_url", "HASH_CHARS"]

HASH_CHARS = 16
RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)  # then 1 s between attempts
OPEN_TIMEOUT = 5.0


def frames_path(label: str, home: str | None = None, run_id: str | None = None) -> Path:
    """Where the run's frames of fleet `label` are (or will be) recorded (JSON lines)."""
    run_id = run_id or runs.current_run_id(home)
    return stack_home(home) / "runs" / f"{run_id}.frames-{label}.jsonl"


def read_frames(label: str, home: str | None = None, run_id: str | None = None) -> list[dict]:
    """Every line recorded by fleet `label` of the run (empty when none)."""
    path = frames_path(label, home, run_id)
    if not path.exists():
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def ws_url(base: str, path: str = "/v1/ws") -> str:
    """http(s)://host:port -> ws(s)://host:port<path> (the reference gateway's /v1/ws)."""
    base = base.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    elif "://" not in base:
        base = "ws://" + base
    return base if base.endswith(path) else base + path


def _reference_file() -> Path:
    from chaosmessaging.resources import bundled

    return bundled("platforms") / "reference.yaml"


def sent_hash(client_msg_id: str) -> str | None:
    """The payload hash the sender put at the end of the client message id, if any."""
    tail = client_msg_id.rsplit(":", 1)[-1]
    if len(tail) == HASH_CHARS and all(c in "0123456789abcdef" for c in tail):
        return tail
    return None


@dataclass
class Device:
    user: str  # username
    number: int
    token: str
    conversations: frozenset[str]
    name: str = ""
    last_seq: str | None = None
    connected: asyncio.Event | None = None
    frames: int = 0
    closes: list[dict] = field(default_factory=list)
    ws: object = None
    online: bool = False
    caught_up: bool = False  # the gateway said every frame owed since `after` was sent
    # a slow reader: stops reading `stall_for_s` seconds, `stall_after_s` after the fleet started
    # (a phone in a tunnel); it reads through a small client queue so the gateway feels it
    stall_after_s: float = 0.0
    stall_for_s: float = 0.0

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.user}/d{self.number}"


SLOW_READER_RCVBUF = 16 * 1024


async def _small_window_socket(url: str) -> socket.socket:
    """A TCP socket connected to `url`'s host and port with a small receive buffer (set before
    connecting, so the kernel neither widens the window nor autotunes it)."""
    parsed = urlsplit(url)
    port = parsed.port or (443 if parsed.scheme == "wss" else 80)
    info = await asyncio.get_running_loop().getaddrinfo(
        parsed.hostname, port, type=socket.SOCK_STREAM
    )
    family, kind, proto, _, address = info[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_READER_RCVBUF)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), OPEN_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return sock


class Fleet:
    """Devices on one asyncio loop in a thread; `start()` returns once every device is connected."""

    def __init__(
        self,
        url: str,
        devices: list[Device],
        path: Path,
        login=None,
        ping_interval: float | None = None,
        channel: WebSocketDelivery | None = None,
        send_as: SendAs | None = None,
        delivery: str = "websocket",
        platform: Platform | None = None,
    ) -> None:
        """`channel` and `send_as`: the platform file's WebSocket and token mapping (default:
        the reference platform's); `delivery`: another channel, whose registered driver runs
        each device instead of the WebSocket loop (it reads its settings from `platform`)."""
        if delivery == "websocket" and (channel is None or send_as is None):
            from chaosmessaging.platform import load_platform

            reference = load_platform(_reference_file())
            channel = channel or reference.delivery.websocket
            send_as = send_as or reference.login.send_as
        self.platform = platform
        self.channel = channel
        self.send_as = (channel.auth if channel else None) or send_as
        self.driver = runner_for(delivery)
        self.url = url
        self.devices = devices
        self.path = path
        self.login = login  # username -> fresh token (after a 401)
        self.ping_interval = ping_interval
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="ws-fleet", daemon=True)
        self.stopping: asyncio.Event | None = None
        self.ready = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.out = None
        self.started_at = 0.0
        self.stopped_at = 0.0

    # ---- thread side ----

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by start()/stop()
            self.error = exc
        finally:
            self.ready.set()
            self.done.set()

    async def _main(self) -> None:
        self.stopping = asyncio.Event()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", buffering=1 << 16) as out:
            self.out = out
            self.started_at = time.time()
            tasks = []
            for d in self.devices:
                d.connected = asyncio.Event()
                run = self._device if self.driver is None else self.driver
                tasks.append(asyncio.create_task(run(self, d) if self.driver else run(d)))
            waiter = asyncio.create_task(self._all_connected())
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            self.ready.set()
            await self.stopping.wait()
            # a normal goodbye (1000) from every device, then end the tasks
            await asyncio.gather(
                *(d.ws.close(1000, "client done") for d in self.devices if d.ws is not None),
                return_exceptions=True,
            )
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.stopped_at = time.time()
            out.flush()

    async def _all_connected(self) -> None:
        await asyncio.gather(*(d.connected.wait() for d in self.devices))

    def _write(self, doc: dict) -> None:
        self.out.write(json.dumps(doc, separators=(",", ":")) + "\n")

    def record_event(self, d: Device, kind: str, **facts) -> None:
        """A connection event of device `d` (open, close, reconnect, error, refused)."""
        self._write({"kind": kind, "device": d.name, "t": facts.pop("t", time.time()), **facts})

    def _connect_args(self, d: Device) -> tuple[str, dict]:
        params, headers = [], {}
        resume = self.channel.resume
        if resume is not None and d.last_seq:
            params.append((resume.query, str(d.last_seq)))
        if self.send_as.header:
            headers[self.send_as.header] = self.send_as.format.replace("{token}", d.token)
        else:
            params.append((self.send_as.query, d.token))
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
        return self.url + (("&" if "?" in self.url else "?") + query if query else ""), headers

    async def _device(self, d: Device) -> None:
        attempt = 0
        lost_at: float | None = None
        while not self.stopping.is_set():
            url, headers = self._connect_args(d)
            try:
                # a slow reader reads through a small receive window, so a backlog waits at the
                # server, not in this machine's socket buffers
                extra = {"sock": await _small_window_socket(url)} if d.stall_for_s else {}
                async with connect(
                    url,
                    **extra,
                    additional_headers=headers,
                    open_timeout=OPEN_TIMEOUT,
                    ping_interval=self.ping_interval,
                    close_timeout=2,
                    max_size=2**22,
                    max_queue=2 if d.stall_for_s else None,
                ) as ws:
                    d.ws = ws
                    d.online = True
                    attempt = 0
                    if self.channel.ready_kind is None:
                        d.connected.set()
                    now = time.time()
                    self._write({"kind": "open", "device": d.name, "t": now, "after": d.last_seq})
                    if lost_at is not None:
                        self._write(
                            {
                                "kind": "reconnect",
                                "device": d.name,
                                "t": now,
                                "seconds": round(now - lost_at, 4),
                                "after": d.last_seq,
                            }
                        )
                        lost_at = None
                    try:
                        async for raw in ws:
                            self._frame(d, raw)
                            if d.stall_for_s:
                                await self._stall(d)
                    finally:
                        d.online = d.caught_up = False
                        if not self.stopping.is_set():
                            lost_at = time.time()
                            self._closed(d, ws, lost_at)
            except asyncio.CancelledError:
                raise
            except InvalidStatus as exc:
                status = exc.response.status_code
                self._write(
                    {"kind": "refused", "device": d.name, "t": time.time(), "status": status}
                )
                if status == 401 and self.login is not None:
                    try:
                        d.token = await asyncio.to_thread(self.login, d.user)
                    except Exception:  # noqa: BLE001 - retried below
                        pass
            except (OSError, TimeoutError, ConnectionClosed) as exc:
                if lost_at is None:
                    lost_at = time.time()
                self._write(
                    {
                        "kind": "error",
                        "device": d.name,
                        "t": time.time(),
                        "error": f"{type(exc).__name__}: {exc}"[:200],
                    }
                )
            delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
            attempt += 1
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
            except TimeoutError:
                pass

    async def _stall(self, d: Device) -> None:
        """A slow reader's pause: once, from stall_after_s for stall_for_s seconds."""
        begin = self.started_at + d.stall_after_s
        end = begin + d.stall_for_s
        now = time.time()
        if begin <= now < end:
            self._write({"kind": "stall", "device": d.name, "t": now, "until": end})
            try:
                await asyncio.wait_for(self.stopping.wait(), end - now)
            except TimeoutError:
                pass

    def _closed(self, d: Device, ws, at: float) -> None:
        proto = ws.protocol
        by_server = proto.close_rcvd is not None and (
            proto.close_sent is None or proto.close_rcvd_then_sent
        )
        code = (
            proto.close_rcvd.code
            if proto.close_rcvd
            else (proto.close_sent.code if proto.close_sent else 1006)
        )
        reason = proto.close_rcvd.reason if proto.close_rcvd else ""
        event = {
            "kind": "close",
            "device": d.name,
            "t": at,
            "code": code,
            "reason": reason,
            "by": "server" if by_server else ("client" if proto.close_sent else "network"),
        }
        d.closes.append(event)
        self._write(event)

    def _frame(self, d: Device, raw) -> None:
        received = time.time()
        if isinstance(raw, bytes):
            self._write({"kind": "bad", "device": d.name, "t": received, "why": "binary frame"})
            return
        try:
            doc = json.loads(raw)
        except ValueError:
            self._write({"kind": "bad", "device": d.name, "t": received, "why": "not JSON"})
            return
        frame, channel = self.channel.frame, self.channel
        kind = find_one(frame.kind, doc) if frame.kind else None
        if kind is not None and kind == channel.ready_kind:
            d.connected.set()
            return
        if kind is not None and kind == channel.caught_up_kind:
            d.caught_up = True
            return
        if not is_message(frame, doc):
            return
        if channel.resume is not None:
            position = find_one(channel.resume.source, doc)
            if position:
                d.last_seq = position
        self.record_message(d, normalize(frame, doc), received)

    def record_message(self, d: Device, record: dict, received: float) -> None:
        """Check one normalized message record (`drivers.normalize`) device `d` received at
        `received` and write its frame line: hash against the sender's, latency, membership."""
        payload = record.get("payload")
        digest = hashlib.sha256(payload).hexdigest() if payload is not None else None
        expected = sent_hash(str(record.get("client_msg_id") or ""))
        accepted = record.get("accepted_at")
        d.frames += 1
        conversation = record.get("conversation_id")
        self._write(
            {
                "kind": "frame",
                "device": d.name,
                "user": d.user,
                "seq": record.get("seq"),
                "message_id": record.get("message_id"),
                "conversation_id": conversation,
                "client_msg_id": record.get("client_msg_id"),
                "accepted_at": accepted,
                "received_at": received,
                "latency_s": round(received - accepted, 6)
                if isinstance(accepted, int | float)
                else None,
                "sha256": digest[:HASH_CHARS] if digest else None,
                "hash_ok": None
                if expected is None
                else digest is not None and digest.startswith(expected),
                "mine": conversation in d.conversations,
            }
        )

    # ---- caller side ----

    def start(self, timeout: float) -> None:
        self.thread.start()
        if not self.ready.wait(timeout) or self.error is not None:
            self.stop(2.0)
            why = f": {self.error}" if self.error else ""
            raise TimeoutError(f"devices did not all connect within {timeout:g}s{why}")
        missing = [d.name for d in self.devices if not d.connected.is_set()]
        if missing:
            self.stop(2.0)
            raise TimeoutError(
                f"{len(missing)} devices never got the gateway's hello: {missing[:5]}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        if self.stopping is not None and not self.done.is_set():
            self.loop.call_soon_threadsafe(self.stopping.set)
        self.done.wait(timeout)

    def summary(self) -> dict:
        return {
            "devices": len(self.devices),
            "frames": sum(d.frames for d in self.devices),
            "closes": sum(len(d.closes) for d in self.devices),
            "path": str(self.path),
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
        }
