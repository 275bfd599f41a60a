"""Fault proxy overhead without toxics: added latency and throughput, next to direct loopback.

Run: `.venv/bin/python benchmarks/proxy_bench.py [--pings 5000] [--megabytes 500] [--rounds 5]`

Starts, on 127.0.0.1 only, a small asyncio test server in its own process (echo, sink and
source on three ports) and the fault proxy as `python -m chaosmessaging.proxy` in another, then
measures from this process, directly and through the proxy in the same run:
- request/response latency: ping-pong of 64-byte messages, p50/p99;
- throughput: a bulk transfer client -> server (upstream) and server -> client (downstream),
  after a warm-up transfer each way, as `--rounds` alternating direct/proxied trials of the
  same client and server code (same chunk and buffer sizes); medians are compared.
Prints the figures, the ratios and whether the targets are met (< 0.5 ms added at p50,
>= 50% of direct throughput). Not a test: it always exits 0 unless something fails to run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from chaosmessaging.stack.servers import free_port, wait_for_port

CHUNK = 1 << 16


# -- the test server (own process) ------------------------------------------------------------


class _Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.t.write(data)


class _Sink(asyncio.Protocol):
    """Reads an 8-byte length, discards that many bytes, answers b"k"."""

    def connection_made(self, transport):
        self.t, self.want, self.got, self.head = transport, None, 0, b""

    def data_received(self, data):
        if self.want is None:
            self.head += data
            if len(self.head) < 8:
                return
            self.want = struct.unpack("!Q", self.head[:8])[0]
            data = self.head[8:]
        self.got += len(data)
        if self.got >= self.want:
            self.t.write(b"k")
            self.want, self.got, self.head = None, 0, b""


class _Source(asyncio.Protocol):
    """Reads an 8-byte length, sends that many bytes."""

    def connection_made(self, transport):
        self.t, self.head = transport, b""

    def data_received(self, data):
        self.head += data
        if len(self.head) >= 8:
            want = struct.unpack("!Q", self.head[:8])[0]
            self.head = b""
            block = b"\0" * CHUNK
            asyncio.get_running_loop().create_task(self._send(want, block))

    async def _send(self, want, block):
        while want > 0:
            n = min(want, len(block))
            self.t.write(block[:n])
            want -= n
            if self.t.get_write_buffer_size() > 4 * CHUNK:
                while self.t.get_write_buffer_size() > CHUNK:
                    await asyncio.sleep(0)


def _serve(ports):
    async def main():
        loop = asyncio.get_running_loop()
        for factory, port in zip((_Echo, _Sink, _Source), ports):
            await loop.create_server(factory, "127.0.0.1", port)
        await asyncio.Event().wait()

    asyncio.run(main())


# -- measurements (this process) --------------------------------------------------------------


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _latencies(port: int, count: int) -> list[float]:
    payload = b"p" * 64
    samples = []
    with _connect(port) as s:
        for _ in range(200):  # warm-up
            s.sendall(payload)
            s.recv(64)
        for _ in range(count):
            start = time.perf_counter()
            s.sendall(payload)
            got = 0
            while got < 64:
                got += len(s.recv(64 - got))
            samples.append(time.perf_counter() - start)
    return samples


def _upload(port: int, total: int) -> float:
    block = b"\0" * CHUNK
    with _connect(port) as s:
        start = time.perf_counter()
        s.sendall(struct.pack("!Q", total))
        sent = 0
        while sent < total:
            s.sendall(block)
            sent += len(block)
        assert s.recv(1) == b"k"
        return total / (time.perf_counter() - start) / 1e6


def _download(port: int, total: int) -> float:
    buf = bytearray(1 << 18)
    with _connect(port) as s:
        start = time.perf_counter()
        s.sendall(struct.pack("!Q", total))
        got = 0
        while got < total:
            n = s.recv_into(buf)
            if not n:
                raise RuntimeError("server closed early")
            got += n
        return total / (time.perf_counter() - start) / 1e6


def _pct(samples: list[float], p: float) -> float:
    return statistics.quantiles(samples, n=100)[p - 1] * 1000 if p < 100 else max(samples) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=5000)
    parser.add_argument("--megabytes", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    total = args.megabytes * 1_000_000 // CHUNK * CHUNK

    ports = [free_port() for _ in range(3)]
    server = multiprocessing.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    api_port = free_port()
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaosmessaging.proxy",
            "--host",
            "127.0.0.1",
            "--port",
            str(api_port),
            "--log-level",
            "warning",
        ],
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        for port in ports:
            wait_for_port("127.0.0.1", port, what="bench server")
        wait_for_port("127.0.0.1", api_port, proc=proxy, what="fault proxy")
        proxy_cpu = psutil.Process(proxy.pid)
        proxied = []
        for name, port in zip(("echo", "sink", "source"), ports):
            r = httpx.post(
                f"http://127.0.0.1:{api_port}/proxies",
                json={"name": name, "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{port}"},
            )
            r.raise_for_status()
            proxied.append(int(r.json()["listen"].rsplit(":", 1)[1]))

        direct_lat = _latencies(ports[0], args.pings)
        proxy_lat = _latencies(proxied[0], args.pings)
        d50, d99 = _pct(direct_lat, 50), _pct(direct_lat, 99)
        p50, p99 = _pct(proxy_lat, 50), _pct(proxy_lat, 99)
        print(f"latency, {args.pings} ping-pongs of 64 B (ms):")
        print(f"  direct   p50 {d50:.3f}  p99 {d99:.3f}")
        print(f"  proxied  p50 {p50:.3f}  p99 {p99:.3f}")
        print(f"  added    p50 {p50 - d50:.3f}  p99 {p99 - d99:.3f}")

        results = {}
        for label, func, d_port, p_port in (
            ("upstream", _upload, ports[1], proxied[1]),
            ("downstream", _download, ports[2], proxied[2]),
        ):
            # Warm-up (page cache, socket buffer autotuning, allocator) on both sides, then
            # alternate direct and proxied trials and compare medians: the machine is shared, and
            # a neighbour's burst should neither land on one side only nor decide the result.
            func(d_port, total // 10)
            func(p_port, total // 10)
            directs, throughs, cpu = [], [], 0.0
            for _ in range(args.rounds):
                directs.append(func(d_port, total))
                before = sum(proxy_cpu.cpu_times()[:2])
                throughs.append(func(p_port, total))
                cpu += sum(proxy_cpu.cpu_times()[:2]) - before
            direct, through = statistics.median(directs), statistics.median(throughs)
            results[label] = through / direct
            trials = " ".join(f"{t / d:.0%}" for d, t in zip(directs, throughs))
            print(
                f"throughput {label}, {total / 1e6:.0f} MB x {args.rounds} (median MB/s): direct "
                f"{direct:.0f}  proxied {through:.0f}  ratio {through / direct:.0%}"
                f"  (trials: {trials})"
            )
            # Less noisy than the ratio on a shared machine: what the proxy itself spends.
            print(f"  proxy CPU {cpu / (total * args.rounds / 1e9):.2f} s per GB forwarded")

        lat_ok = p50 - d50 < 0.5
        tput_ok = min(results.values()) >= 0.5
        print(f"target added p50 < 0.5 ms: {'MET' if lat_ok else 'NOT MET'}")
        print(f"target throughput >= 50% of direct: {'MET' if tput_ok else 'NOT MET'}")
    finally:
        proxy.terminate()
        proxy.wait(10)
        server.terminate()
        server.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
