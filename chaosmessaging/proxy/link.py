"""One proxied TCP connection: the client side, the upstream side, and the toxics between them.

Why asyncio protocols rather than streams: forwarding without toxics must cost next to nothing
(< 0.5 ms added at p50, >= 50% of direct loopback throughput). Each side is a BufferedProtocol
that reads (up to 1 MiB) into a reusable buffer and hands a view of it straight to the other
transport's `write`: no task switch, no queue, no copy in Python (only the kernel's copy in and
out). Back-pressure is the transports' own: when one side's write buffer fills, the other side
stops reading until it drains. Both sockets get `TCP_NODELAY`.

Measured and not adopted (benchmarks/proxy_bench.py, 2 shared cores): Linux splice(2) through a
pipe cut the proxy's own CPU from ~0.3 to ~0.2 s per GB upstream, but the throughput ratio did
not move beyond the run-to-run noise, and it needs four extra descriptors per direction (asyncio
refuses add_reader on a transport's descriptor, so they must be dup'ed). Fixed 4 MiB socket
buffers instead of the kernel's autotuning made no measurable difference either. Nor did uvloop
as the proxy's event loop (2026-12-06, benchmarks/pipeline_bench.py at 300 messages/s, two runs
each, alternating: proxy CPU per message 0.298 / 0.357 ms on asyncio, 0.333 / 0.275 ms on uvloop).

When a toxic applies to a direction, that direction switches to a slow path: reads are queued
with their arrival time and one task per direction passes them through the direction's toxics in
order (`_through`), then writes them. Toxics are read live from the proxy on every chunk, so
adding, updating or removing a toxic changes connections that are already open; when the last
toxic goes, the task flushes its queue and the direction returns to the fast path.

Toxic semantics follow Toxiproxy (github.com/Shopify/toxiproxy, toxics/*.go):
- latency: each chunk leaves `latency ± jitter` ms after it arrived (pipelined, not cumulative).
- bandwidth: at most `rate` KB/s; large chunks are sent in 100 ms slices.
- slow_close: the close (EOF) of the stream is delayed by `delay` ms.
- timeout: all data is dropped; after `timeout` ms the connection is closed (0 = never closed,
  data is dropped until the toxic is removed).
- reset_peer: on the first data (or EOF) the data is dropped, and `timeout` ms later both sockets
  are closed with SO_LINGER 0, so the peers see a TCP RST ("connection reset by peer").
- slicer: each chunk is split into slices of about `average_size ± size_variation` bytes,
  `delay` microseconds apart.
- limit_data: the connection is closed once `bytes` bytes went through this stream.
Toxicity is the probability that a toxic applies to a given connection, drawn once per connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .toxics import Toxic

if TYPE_CHECKING:
    from .proxies import Proxy

__all__ = ["ClientSide", "Link"]

log = logging.getLogger("chaosmessaging.proxy")

# Slow path: stop reading the source once this much is queued, resume below the low mark.
_QUEUE_HIGH = 1 << 20
_QUEUE_LOW = 256 << 10
# Each socket reads into a buffer this large: fewer system calls per megabyte forwarded.
_READ_SIZE = 1 << 20
# Since Python 3.12 a socket transport keeps a reference to the unsent rest of a write instead
# of copying it (3.11 copies it into its own bytearray), so only then must a read buffer that
# is still partly unsent be replaced rather than reused.
_WRITE_KEEPS_REFERENCE = sys.version_info >= (3, 12)


class _CloseLink(Exception):
    """Raised by a toxic that ends the connection (reset=True: with a TCP RST)."""

    def __init__(self, reset: bool = False) -> None:
        super().__init__("reset" if reset else "close")
        self.reset = reset


def _tune(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _linger_zero(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass


class Link:
    """A client connection accepted by a proxy, and the upstream connection made for it."""

    def __init__(self, proxy: Proxy, client: asyncio.Transport) -> None:
        self.proxy = proxy
        self.client = client
        self.server: asyncio.Transport | None = None
        self.closed = False
        self._draws: dict[int, bool] = {}
        self.up = _Direction(self, "upstream")
        self.down = _Direction(self, "downstream")
        # The client is not read until the upstream connection exists.
        self.up.src = client
        self.up.pause("connect")
        self._connect_task = asyncio.get_running_loop().create_task(self._connect())

    def applies(self, toxic: Toxic) -> bool:
        """Whether `toxic` applies to this connection (its toxicity, drawn once)."""
        drawn = self._draws.get(toxic.uid)
        if drawn is None:
            drawn = self._draws[toxic.uid] = random.random() < toxic.toxicity
        return drawn

    def active_toxics(self, stream: str) -> list[Toxic]:
        return [t for t in self.proxy.toxics if t.stream == stream and self.applies(t)]

    def toxics_changed(self) -> None:
        if self.server is not None and not self.closed:
            self.up.refresh()
            self.down.refresh()

    async def _connect(self) -> None:
        host, port = self.proxy.upstream_address()
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _UpstreamSide(self), host, port)
        except OSError as exc:
            log.warning(
                "proxy %s: cannot connect to upstream %s: %s",
                self.proxy.name,
                self.proxy.upstream,
                exc,
            )
            self.close()

    def attach_server(self, server: asyncio.Transport) -> None:
        if self.closed:
            server.abort()
            return
        _tune(server)
        self.server = server
        self.up.dst = server
        self.down.src, self.down.dst = server, self.client
        self.up.refresh()
        self.down.refresh()
        self.up.release()
        self.up.resume("connect")

    def stream_ended(self) -> None:
        """One direction delivered its EOF; once both did, the connection is over."""
        if self.up.eof_sent and self.down.eof_sent:
            self.close()

    def close(self, reset: bool = False, drop: bool = False) -> None:
        """Close both sockets: gracefully (flush first), dropped, or with a TCP RST."""
        if self.closed:
            return
        self.closed = True
        for transport in (self.client, self.server):
            if transport is None:
                continue
            if reset:
                _linger_zero(transport)
                transport.abort()
            elif drop:
                transport.abort()
            else:
                transport.close()
        self._connect_task.cancel()
        self.up.stop()
        self.down.stop()
        self.proxy.links.discard(self)


class _Direction:
    """The bytes flowing one way: upstream (client -> server) or downstream (server -> client)."""

    def __init__(self, link: Link, stream: str) -> None:
        self.link = link
        self.stream = stream
        self.src: asyncio.Transport | None = None
        self.dst: asyncio.Transport | None = None
        self.fast = True
        self.eof_sent = False
        self._queue: deque[tuple[float, bytes | None]] = deque()
        self._queued = 0
        self._task: asyncio.Task | None = None
        self._data = asyncio.Event()  # new data or a toxic change: the pump looks again
        self._changed = asyncio.Event()  # a toxic change: interruptible sleeps look again
        self._writable = asyncio.Event()
        self._writable.set()
        self._paused: set[str] = set()
        self._state: dict[tuple[str, int], float] = {}
        self._early: list[bytes | None] = []

    # -- fed by the protocols -------------------------------------------------------------
    def hold(self, data: bytes | None) -> None:
        """Keep what the client sent before the upstream connection exists (data, or None for
        EOF). Pausing the client in connection_made is not enough: on older Python 3.11 releases
        (e.g. Debian's 3.11.2) the transport starts reading after connection_made whatever the
        protocol asked, so every client that speaks first would hit a missing upstream."""
        self._early.append(data)
        self.pause("connect")

    def release(self) -> None:
        """The upstream connection exists: pass on what was held, in order."""
        early, self._early = self._early, []
        for data in early:
            if data is None:
                self.feed_eof()
            else:
                self.feed(data)

    def feed(self, data: bytes) -> None:
        if self.fast:
            self.dst.write(data)
            return
        self._queue.append((time.monotonic(), data))
        self._queued += len(data)
        if self._queued > _QUEUE_HIGH:
            self.pause("queue")
        self._data.set()

    def feed_eof(self) -> None:
        if self.dst is None:
            self.hold(None)
        elif self.fast:
            self._send_eof()
        else:
            self._queue.append((time.monotonic(), None))
            self._data.set()

    def dst_paused(self, paused: bool) -> None:
        if paused:
            self._writable.clear()
            self.pause("dst")
        else:
            self._writable.set()
            self.resume("dst")

    def pause(self, reason: str) -> None:
        if not self._paused and self.src is not None:
            self.src.pause_reading()
        self._paused.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self._paused:
            return
        self._paused.discard(reason)
        if not self._paused and self.src is not None and not self.link.closed:
            self.src.resume_reading()

    # -- toxics ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Toxics changed: leave the fast path if one now applies; wake the slow path."""
        if self.fast and not self.eof_sent and self.link.active_toxics(self.stream):
            self.fast = False
            self._task = asyncio.get_running_loop().create_task(self._pump())
        self._changed.set()
        self._data.set()

    def stop(self) -> None:
        self._writable.set()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def _send_eof(self) -> None:
        if self.eof_sent:
            return
        self.eof_sent = True
        if self.dst is not None and self.dst.can_write_eof():
            try:
                self.dst.write_eof()
            except (OSError, RuntimeError):
                pass
        self.link.stream_ended()

    async def _pump(self) -> None:
        try:
            while not self.link.closed:
                toxics = self.link.active_toxics(self.stream)
                if not toxics and not self._queue:
                    self.fast = True
                    return
                deadline = self._timeout_deadline(toxics)
                if not self._queue:
                    self._data.clear()
                    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                    try:
                        await asyncio.wait_for(self._data.wait(), wait)
                    except TimeoutError:
                        pass
                    continue
                arrival, data = self._queue.popleft()
                if data is None:
                    await self._eof(toxics)
                    return
                self._queued -= len(data)
                if self._queued < _QUEUE_LOW:
                    self.resume("queue")
                await self._through(toxics, 0, data, arrival)
        except _CloseLink as stop:
            self.link.close(reset=stop.reset)
        except (OSError, RuntimeError) as exc:
            log.debug("proxy %s: %s stream failed: %s", self.link.proxy.name, self.stream, exc)
            self.link.close()

    def _timeout_deadline(self, toxics: list[Toxic]) -> float | None:
        """Earliest close time of active `timeout` toxics; raise if one has expired."""
        deadline = None
        now = time.monotonic()
        for toxic in toxics:
            if toxic.type != "timeout" or toxic.attributes["timeout"] <= 0:
                continue
            start = self._state.setdefault(("timeout", toxic.uid), now)
            due = start + toxic.attributes["timeout"] / 1000
            if due <= now:
                raise _CloseLink()
            deadline = due if deadline is None else min(deadline, due)
        return deadline

    async def _through(self, toxics: list[Toxic], index: int, data: bytes, arrival: float) -> None:
        if index == len(toxics):
            await self._write(data)
            return
        toxic = toxics[index]
        async for piece in _ACTIONS[toxic.type](self, toxic, data, arrival):
            await self._through(toxics, index + 1, piece, arrival)

    async def _write(self, data: bytes) -> None:
        while not self._writable.is_set() and not self.link.closed:
            await self._writable.wait()
        if not self.link.closed:
            self.dst.write(data)

    async def _eof(self, toxics: list[Toxic]) -> None:
        for toxic in toxics:
            if toxic.type == "reset_peer":
                await asyncio.sleep(toxic.attributes["timeout"] / 1000)
                raise _CloseLink(reset=True)
            if toxic.type == "slow_close":
                await self.sleep_while_active(toxic, toxic.attributes["delay"] / 1000)
        self._send_eof()

    async def sleep_while_active(self, toxic: Toxic, seconds: float) -> None:
        """Sleep, but stop early if `toxic` is removed or updated (Toxiproxy's interrupt)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if toxic not in self.link.active_toxics(self.stream):
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return

    def state(self, key: str, toxic: Toxic, default: float = 0.0) -> float:
        return self._state.get((key, toxic.uid), default)

    def set_state(self, key: str, toxic: Toxic, value: float) -> None:
        self._state[(key, toxic.uid)] = value


# -- what each toxic does to one chunk: an async generator of the pieces to pass on ----------


async def _latency(d: _Direction, t: Toxic, data: bytes, arrival: float) -> AsyncIterator[bytes]:
    delay = t.attributes["latency"]
    jitter = t.attributes["jitter"]
    if jitter > 0:
        delay += random.randint(-jitter, jitter)
    wait = arrival + delay / 1000 - time.monotonic()
    if wait > 0:
        await d.sleep_while_active(t, wait)
    yield data


async def _bandwidth(d: _Direction, t: Toxic, data: bytes, arrival: float) -> AsyncIterator[bytes]:
    rate = t.attributes["rate"] * 1000  # bytes per second
    if rate <= 0:
        yield data
        return
    slice_size = max(1, rate // 10)  # 100 ms worth, as Toxiproxy does for large chunks
    for start in range(0, len(data), slice_size):
        piece = data[start : start + slice_size]
        # A running "free at" time rather than per-piece sleeps, so timer slack does not add up.
        free_at = max(time.monotonic(), d.state("bandwidth", t)) + len(piece) / rate
        d.set_state("bandwidth", t, free_at)
        wait = free_at - time.monotonic()
        if wait > 0:
            await d.sleep_while_active(t, wait)
        yield piece


async def _pass(d: _Direction, t: Toxic, data: bytes, arrival: float) -> AsyncIterator[bytes]:
    yield data  # slow_close only acts on EOF (see _Direction._eof)


async def _timeout(d: _Direction, t: Toxic, data: bytes, arrival: float) -> AsyncIterator[bytes]:
    return  # data is dropped; the close after `timeout` ms is driven by the pump's deadline
    yield  # pragma: no cover - makes this an async generator


async def _reset_peer(d: _Direction, t: Toxic, data: bytes, arrival: float) -> AsyncIterator[bytes]:
    await asyncio.sleep(t.attributes["timeout"] / 1000)
    raise _CloseLink(reset=True)
    yield  # pragma: no cover - makes this an async generator


async def _slicer(d: _Direction, t: Toxic, data: bytes, arrival: float) -> AsyncIterator[bytes]:
    average = t.attributes["average_size"]
    variation = min(max(t.attributes["size_variation"], 0), max(average - 1, 0))
    delay = t.attributes["delay"] / 1_000_000
    if average <= 0:
        yield data
        return
    start = 0
    while start < len(data):
        size = average + (random.randint(-variation, variation) if variation else 0)
        piece = data[start : start + max(1, size)]
        start += len(piece)
        yield piece
        if delay > 0 and start < len(data):
            await asyncio.sleep(delay)


async def _limit_data(d: _Direction, t: Toxic, data: bytes, arrival: float) -> AsyncIterator[bytes]:
    limit = t.attributes["bytes"]
    sent = int(d.state("limit_data", t))
    remaining = max(0, limit - sent)
    piece = data[:remaining]
    if piece:
        d.set_state("limit_data", t, sent + len(piece))
        yield piece
    if sent + len(piece) >= limit:
        raise _CloseLink()


_ACTIONS = {
    "latency": _latency,
    "bandwidth": _bandwidth,
    "slow_close": _pass,
    "timeout": _timeout,
    "reset_peer": _reset_peer,
    "slicer": _slicer,
    "limit_data": _limit_data,
}


# -- the asyncio protocols of the two sockets ----------------------------------------------


class _Side(asyncio.BufferedProtocol):
    """Reads straight into a reusable buffer and hands the bytes to its direction.

    A buffer is reused only while the destination transport keeps none of it: a write that
    could not be sent whole may be kept by reference (newer asyncio), so we then start a new one.
    """

    def _setup(self) -> None:
        self._buffer = memoryview(bytearray(_READ_SIZE))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        direction = self._reads()
        if direction.dst is None:
            direction.hold(bytes(self._buffer[:nbytes]))
        elif direction.fast:
            dst = direction.dst
            dst.write(self._buffer[:nbytes])
            if _WRITE_KEEPS_REFERENCE and dst.get_write_buffer_size():
                self._setup()
        else:
            direction.feed(bytes(self._buffer[:nbytes]))

    def _reads(self) -> _Direction:
        raise NotImplementedError


class ClientSide(_Side):
    """Protocol of a socket accepted by a proxy's listener."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.link: Link | None = None
        self._setup()

    def _reads(self) -> _Direction:
        return self.link.up

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _tune(transport)
        self.link = Link(self.proxy, transport)  # type: ignore[arg-type]
        self.proxy.links.add(self.link)

    def eof_received(self) -> bool:
        self.link.up.feed_eof()
        return True  # keep our write side open: the server may still answer (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.close()

    def pause_writing(self) -> None:
        self.link.down.dst_paused(True)

    def resume_writing(self) -> None:
        self.link.down.dst_paused(False)


class _UpstreamSide(_Side):
    """Protocol of the connection a link opens to the proxy's upstream."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self._setup()

    def _reads(self) -> _Direction:
        return self.link.down

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.link.attach_server(transport)  # type: ignore[arg-type]

    def eof_received(self) -> bool:
        self.link.down.feed_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.close()

    def pause_writing(self) -> None:
        self.link.up.dst_paused(True)

    def resume_writing(self) -> None:
        self.link.up.dst_paused(False)
