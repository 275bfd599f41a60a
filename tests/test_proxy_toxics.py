"""Real traffic through the fault proxy: each toxic's observable effect, measured.

Traffic goes to a small echo server, to the private Redis and to the private PostgreSQL, all on
loopback. Timings carry tolerances wide enough for a busy 2-core machine but narrow enough that
a toxic which does nothing (or the wrong thing) fails.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from chaosmessaging.proxy import BackgroundProxyServer
from chaosmessaging.stack import servers


class EchoServer:
    """Echoes every byte back; closes its side when the client half-closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.sock.close()


@pytest.fixture(scope="module")
def proxy_server() -> Iterator[BackgroundProxyServer]:
    with BackgroundProxyServer() as server:
        yield server


@pytest.fixture()
def api(proxy_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy_server.url, timeout=10) as client:
        yield client
        for name in list(client.get("/proxies").json()):
            client.delete(f"/proxies/{name}")


def _proxy(api: httpx.Client, name: str, upstream_port: int) -> tuple[str, int]:
    r = api.post("/proxies", json={"name": name, "upstream": f"127.0.0.1:{upstream_port}"})
    assert r.status_code == 201, r.text
    host, port = r.json()["listen"].rsplit(":", 1)
    return host, int(port)


def _toxic(api: httpx.Client, proxy: str, **toxic) -> None:
    r = api.post(f"/proxies/{proxy}/toxics", json=toxic)
    assert r.status_code == 200, r.text


def _connect(address: tuple[str, int]) -> socket.socket:
    s = socket.create_connection(address, timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _round_trip(s: socket.socket, payload: bytes = b"ping") -> float:
    start = time.perf_counter()
    s.sendall(payload)
    assert _recv_exactly(s, len(payload)) == payload
    return time.perf_counter() - start


def test_no_toxic_forwards_bytes_intact_both_ways(api, echo) -> None:
    address = _proxy(api, "echo", echo.port)
    payload = bytes(range(256)) * 4096  # 1 MiB
    with _connect(address) as s:
        sender = threading.Thread(target=s.sendall, args=(payload,))
        sender.start()
        assert _recv_exactly(s, len(payload)) == payload
        sender.join()
        assert _round_trip(s) < 0.05


def test_latency_is_added_to_a_live_connection_and_removed(api, echo) -> None:
    address = _proxy(api, "echo", echo.port)
    with _connect(address) as s:
        assert _round_trip(s) < 0.05
        _toxic(api, "echo", type="latency", attributes={"latency": 100})
        rtts = [_round_trip(s) for _ in range(3)]
        assert all(0.07 <= rtt <= 0.13 for rtt in rtts), rtts
        _toxic(api, "echo", type="latency", stream="upstream", attributes={"latency": 100})
        rtt = _round_trip(s)
        assert 0.17 <= rtt <= 0.26, rtt
        api.delete("/proxies/echo/toxics/latency_downstream")
        api.delete("/proxies/echo/toxics/latency_upstream")
        assert _round_trip(s) < 0.05


def test_bandwidth_limits_the_rate_within_20_percent(api, echo) -> None:
    address = _proxy(api, "echo", echo.port)
    _toxic(api, "echo", type="bandwidth", attributes={"rate": 200})  # 200 KB/s downstream
    payload = b"x" * 100_000
    with _connect(address) as s:
        start = time.perf_counter()
        s.sendall(payload)
        assert _recv_exactly(s, len(payload)) == payload
        elapsed = time.perf_counter() - start
    rate = len(payload) / elapsed / 1000
    assert 160 <= rate <= 240, f"{rate:.0f} KB/s"


def test_reset_peer_is_seen_as_connection_reset(api, echo) -> None:
    address = _proxy(api, "echo", echo.port)
    _toxic(api, "echo", type="reset_peer", attributes={"timeout": 100})
    with _connect(address) as s:
        start = time.perf_counter()
        s.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            s.recv(100)
        assert time.perf_counter() - start >= 0.09


def test_timeout_zero_holds_data_until_removed_without_closing(api, echo) -> None:
    address = _proxy(api, "echo", echo.port)
    with _connect(address) as s:
        _toxic(api, "echo", type="timeout", attributes={"timeout": 0})
        s.sendall(b"lost")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(100)
        api.delete("/proxies/echo/toxics/timeout_downstream")
        s.settimeout(5)
        # Like Toxiproxy, data that arrived under the toxic was dropped; the connection lives on.
        assert _round_trip(s, b"after") < 0.05


def test_timeout_closes_the_connection_after_the_delay(api, echo) -> None:
    address = _proxy(api, "echo", echo.port)
    _toxic(api, "echo", type="timeout", attributes={"timeout": 300})
    with _connect(address) as s:
        start = time.perf_counter()
        s.sendall(b"hello")
        assert s.recv(100) == b""
        assert 0.25 <= time.perf_counter() - start <= 0.8


def test_limit_data_closes_after_n_bytes(api, echo) -> None:
    address = _proxy(api, "echo", echo.port)
    _toxic(api, "echo", type="limit_data", attributes={"bytes": 1000})
    with _connect(address) as s:
        s.sendall(b"a" * 3000)
        received = bytearray()
        while chunk := s.recv(65536):
            received += chunk
    assert received == b"a" * 1000


def test_slicer_delivers_data_intact_in_many_slices(api, echo) -> None:
    address = _proxy(api, "echo", echo.port)
    _toxic(
        api,
        "echo",
        type="slicer",
        attributes={"average_size": 100, "size_variation": 50, "delay": 2000},
    )
    payload = bytes(range(256)) * 20  # 5120 bytes -> ~51 slices, 2 ms apart
    with _connect(address) as s:
        s.sendall(payload)
        received, reads = bytearray(), 0
        while len(received) < len(payload):
            chunk = s.recv(65536)
            assert chunk
            received += chunk
            reads += 1
    assert bytes(received) == payload
    assert reads >= 5, reads


def test_slow_close_delays_the_close(api, echo) -> None:
    address = _proxy(api, "echo", echo.port)

    def close_time() -> float:
        with _connect(address) as s:
            assert _round_trip(s) < 0.2
            start = time.perf_counter()
            s.shutdown(socket.SHUT_WR)  # echo server closes -> EOF comes back through the proxy
            assert s.recv(100) == b""
            return time.perf_counter() - start

    assert close_time() < 0.2
    _toxic(api, "echo", type="slow_close", attributes={"delay": 500})
    assert 0.45 <= close_time() <= 1.0


def test_toxicity_zero_never_applies(api, echo) -> None:
    address = _proxy(api, "echo", echo.port)
    _toxic(api, "echo", type="latency", toxicity=0.0, attributes={"latency": 300})
    for _ in range(10):
        with _connect(address) as s:
            assert _round_trip(s) < 0.1


def test_toxicity_one_always_applies(api, echo) -> None:
    address = _proxy(api, "echo", echo.port)
    _toxic(api, "echo", type="latency", toxicity=1.0, attributes={"latency": 100})
    for _ in range(3):
        with _connect(address) as s:
            assert _round_trip(s) >= 0.09


def test_disable_drops_live_connections_and_enable_restores(api, echo) -> None:
    address = _proxy(api, "echo", echo.port)
    with _connect(address) as s:
        assert _round_trip(s) < 0.05
        api.post("/proxies/echo", json={"enabled": False})
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2)
    api.post("/proxies/echo", json={"enabled": True})
    with _connect(address) as s:
        assert _round_trip(s) < 0.05


def test_redis_through_the_proxy_with_and_without_latency(api, redis_server) -> None:
    host, port = _proxy(api, "redis", redis_server.port)
    client = redis.Redis(host=host, port=port, socket_timeout=5)
    try:
        assert client.ping()
        client.set("proxy:test", "value")
        assert client.get("proxy:test") == b"value"
        _toxic(api, "redis", type="latency", stream="upstream", attributes={"latency": 100})
        start = time.perf_counter()
        assert client.get("proxy:test") == b"value"
        assert 0.07 <= time.perf_counter() - start <= 0.2
        _toxic(api, "redis", type="reset_peer")
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host=host, port=port, socket_timeout=5, retry=None).ping()
    finally:
        client.close()


def test_postgres_through_the_proxy_and_disabled(api, postgres_server) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    host, port = _proxy(api, "postgres", postgres_server.port)
    dsn = f"postgresql://postgres@{host}:{port}/postgres"

    async def query() -> int:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return await conn.fetchval("SELECT 41 + 1")
        finally:
            await conn.close()

    assert asyncio.run(query()) == 42
    _toxic(api, "postgres", type="latency", attributes={"latency": 50})
    start = time.perf_counter()
    assert asyncio.run(query()) == 42
    # the startup handshake and the query make several round trips, each 50 ms slower
    assert time.perf_counter() - start >= 0.15
    api.post("/proxies/postgres", json={"enabled": False})
    with pytest.raises(OSError):
        asyncio.run(query())


def test_psql_through_the_proxy(api, postgres_server) -> None:
    import subprocess

    host, port = _proxy(api, "postgres", postgres_server.port)
    psql = servers.postgres_bin_dir() / "psql"
    if not psql.exists():
        pytest.skip(f"no psql at {psql}")
    out = subprocess.run(
        [
            str(psql),
            "-h",
            host,
            "-p",
            str(port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            "SELECT 'through proxy'",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "through proxy"


def test_data_sent_before_the_upstream_connection_exists_is_forwarded(api) -> None:
    """Clients that speak first (Redis, psql) may write before the proxy reached upstream; on
    older Python 3.11 releases (Debian's 3.11.2) the proxy then reads them early, whatever it
    paused. Nothing may be lost or crash the link.

    The upstream's accept queue is kept full, so the proxy's connect waits for a SYN retry
    (about 1 s) while the client's bytes are already there."""
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(0)
    fillers = []
    for _ in range(3):  # fill the accept queue: further SYNs are dropped and retried later
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(upstream.getsockname())
        fillers.append(f)
    time.sleep(0.2)
    address = _proxy(api, "eager", upstream.getsockname()[1])
    with _connect(address) as client:
        client.sendall(b"hello, early")
        time.sleep(0.3)  # the proxy has read the bytes; its upstream connect is still pending
        for f in fillers:
            f.close()

        def serve() -> None:  # drain the queue, echo on the proxy's connection
            upstream.settimeout(5)
            while True:
                conn, _ = upstream.accept()
                conn.settimeout(5)
                try:
                    data = conn.recv(64)
                except OSError:
                    data = b""
                if data:
                    conn.sendall(data)
                    conn.close()
                    return
                conn.close()

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        assert _recv_exactly(client, 12) == b"hello, early"
        server.join(5)
    upstream.close()
