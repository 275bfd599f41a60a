"""Toxiproxy's HTTP API over a `ProxyCollection`, as a Starlette app.

Routes, JSON shapes and status codes are Toxiproxy's (api.go):

| route | method | success |
|---|---|---|
| /proxies | GET | 200 `{name: proxy}` |
| /proxies | POST | 201 proxy (409 if the name exists, 400 on a bad body) |
| /populate | POST | 201 `{"proxies": [proxy, ...]}` |
| /proxies/{proxy} | GET | 200 proxy |
| /proxies/{proxy} | POST, PATCH | 200 proxy (update `enabled`, `listen`, `upstream`) |
| /proxies/{proxy} | DELETE | 204 |
| /proxies/{proxy}/toxics | GET | 200 `[toxic, ...]` |
| /proxies/{proxy}/toxics | POST | 200 toxic (409 if the name exists) |
| /proxies/{proxy}/toxics/{toxic} | GET | 200 toxic |
| /proxies/{proxy}/toxics/{toxic} | POST, PATCH | 200 toxic (update `attributes`, `toxicity`) |
| /proxies/{proxy}/toxics/{toxic} | DELETE | 204 |
| /reset | POST | 204 (enable every proxy, remove every toxic) |
| /version | GET | 200 `{"version": "..."}` |

A proxy is `{"name", "listen", "upstream", "enabled", "toxics": [...]}`; a toxic is
`{"name", "type", "stream", "toxicity", "attributes"}`. Errors are `{"error": msg, "status": code}`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .errors import ApiError, bad_request
from .proxies import ProxyCollection

__all__ = ["API_VERSION", "create_app"]

# The Toxiproxy release whose API this server mirrors; reported by GET /version.
API_VERSION = "2.12.0"

Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Handler) -> Handler:
    """Turn an ApiError raised by a handler into Toxiproxy's error body and status."""

    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return JSONResponse(exc.to_json(), status_code=exc.status)

    return wrapper


async def _body(request: Request) -> object:
    raw = await request.body()
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def create_app(collection: ProxyCollection) -> Starlette:
    """The HTTP API app serving `collection`."""

    async def proxy_index(request: Request) -> Response:
        return JSONResponse({name: p.to_json() for name, p in collection.proxies.items()})

    async def proxy_create(request: Request) -> Response:
        proxy = await collection.create(await _body(request))
        return JSONResponse(proxy.to_json(), status_code=201)

    async def populate(request: Request) -> Response:
        try:
            proxies = await collection.populate(await _body(request))
        except ApiError as exc:
            return JSONResponse({**exc.to_json(), "proxies": None}, status_code=exc.status)
        return JSONResponse({"proxies": [p.to_json() for p in proxies]}, status_code=201)

    async def proxy_show(request: Request) -> Response:
        return JSONResponse(collection.get(request.path_params["proxy"]).to_json())

    async def proxy_update(request: Request) -> Response:
        name = request.path_params["proxy"]
        collection.get(name)  # 404 before looking at the body, as Toxiproxy does
        proxy = await collection.update(name, await _body(request))
        return JSONResponse(proxy.to_json())

    async def proxy_delete(request: Request) -> Response:
        await collection.remove(request.path_params["proxy"])
        return Response(status_code=204)

    async def toxic_index(request: Request) -> Response:
        proxy = collection.get(request.path_params["proxy"])
        return JSONResponse([t.to_json() for t in proxy.toxics])

    async def toxic_create(request: Request) -> Response:
        proxy = collection.get(request.path_params["proxy"])
        return JSONResponse(proxy.add_toxic(await _body(request)).to_json())

    async def toxic_show(request: Request) -> Response:
        proxy = collection.get(request.path_params["proxy"])
        return JSONResponse(proxy.find_toxic(request.path_params["toxic"]).to_json())

    async def toxic_update(request: Request) -> Response:
        proxy = collection.get(request.path_params["proxy"])
        toxic = proxy.update_toxic(request.path_params["toxic"], await _body(request))
        return JSONResponse(toxic.to_json())

    async def toxic_delete(request: Request) -> Response:
        proxy = collection.get(request.path_params["proxy"])
        proxy.remove_toxic(request.path_params["toxic"])
        return Response(status_code=204)

    async def reset(request: Request) -> Response:
        await collection.reset()
        return Response(status_code=204)

    async def version(request: Request) -> Response:
        return JSONResponse({"version": API_VERSION})

    routes = [
        Route("/reset", _guarded(reset), methods=["POST"]),
        Route("/proxies", _guarded(proxy_index), methods=["GET"]),
        Route("/proxies", _guarded(proxy_create), methods=["POST"]),
        Route("/populate", _guarded(populate), methods=["POST"]),
        Route("/proxies/{proxy}", _guarded(proxy_show), methods=["GET"]),
        Route("/proxies/{proxy}", _guarded(proxy_update), methods=["POST", "PATCH"]),
        Route("/proxies/{proxy}", _guarded(proxy_delete), methods=["DELETE"]),
        Route("/proxies/{proxy}/toxics", _guarded(toxic_index), methods=["GET"]),
        Route("/proxies/{proxy}/toxics", _guarded(toxic_create), methods=["POST"]),
        Route("/proxies/{proxy}/toxics/{toxic}", _guarded(toxic_show), methods=["GET"]),
        Route("/proxies/{proxy}/toxics/{toxic}", _guarded(toxic_update), methods=["POST", "PATCH"]),
        Route("/proxies/{proxy}/toxics/{toxic}", _guarded(toxic_delete), methods=["DELETE"]),
        Route("/version", _guarded(version), methods=["GET"]),
    ]
    return Starlette(routes=routes)
