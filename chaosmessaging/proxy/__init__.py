"""A Toxiproxy-compatible fault proxy, built on asyncio.

Why we wrote one: the embedded stack needs a TCP fault proxy between the services and
Redis/PostgreSQL, and no Toxiproxy binary installs on our machines (it is in neither PyPI,
Debian nor npm). This package speaks Toxiproxy's HTTP API (same routes, JSON shapes, status codes
and error bodies) and implements its documented toxics (latency, bandwidth, slow_close, timeout,
reset_peer, slicer, limit_data), so every experiment, the `toxiproxy-python` client and the
extension's toxiproxy actions work unchanged against either. A real Toxiproxy
(github.com/Shopify/toxiproxy, e.g. its Docker image) is a drop-in alternative: point
`toxiproxy_url` at it instead.

Running it::

    python -m chaosmessaging.proxy --host 127.0.0.1 --port 8474 [--config proxies.json]

SIGTERM or SIGINT stops it cleanly. In-process (tests, tools)::

    from chaosmessaging.proxy import BackgroundProxyServer
    with BackgroundProxyServer() as server:     # free loopback port, own thread and loop
        print(server.url)

or `await serve(host, port, stop=event)` inside an event loop.

How the embedded launcher uses it: start `python -m chaosmessaging.proxy --host 127.0.0.1
--port P`, wait until `GET http://127.0.0.1:P/version` answers 200, then create the two proxies
the services go through, in one call::

    POST /populate
    [{"name": "redis",    "listen": "127.0.0.1:<proxied redis port>",
      "upstream": "127.0.0.1:<redis port>"},
     {"name": "postgres", "listen": "127.0.0.1:<proxied pg port>",
      "upstream": "127.0.0.1:<postgres port>"}]

(201, `{"proxies": [...]}`; the `listen` of each proxy in the answer is the address bound, so
`"127.0.0.1:0"` lets the proxy choose a port). Faults are then toxics on those proxies, e.g.
`POST /proxies/redis/toxics {"type": "latency", "attributes": {"latency": 100}}`, and
`POST /reset` removes every toxic and re-enables every proxy.

Without toxics a connection is forwarded by asyncio protocols straight from one socket to the
other (see `link.py`), so the proxy adds well under a millisecond and keeps most of the loopback
throughput. Only stdlib asyncio, Starlette and uvicorn are used; nothing of the reference stack.
"""

from .errors import ApiError
from .proxies import Proxy, ProxyCollection
from .server import BackgroundProxyServer, ProxyServerError, load_config, serve
from .toxics import TOXIC_TYPES, Toxic

__all__ = [
    "TOXIC_TYPES",
    "ApiError",
    "BackgroundProxyServer",
    "Proxy",
    "ProxyCollection",
    "ProxyServerError",
    "Toxic",
    "load_config",
    "serve",
]
