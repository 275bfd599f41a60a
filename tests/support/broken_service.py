"""A reference service with one deliberate defect, to prove plan T11's verdicts fail (sabotage).

    python tests/support/broken_service.py {500|sticky-redis} <service>

- ``500``: every 503 the service would answer becomes a 500 (no graceful degradation);
- ``sticky-redis``: once its Redis check failed, /readyz reports Redis degraded forever (a
  service that never recovers after Redis comes back empty).

Test-only: never part of the extension or of msgstack.
"""

import os
import sys

import msgstack.health as health
import msgstack.service as service
from msgstack.__main__ import main


class FiveHundred:
    """ASGI wrapper: 503 -> 500."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def patched(message):
            if message["type"] == "http.response.start" and message["status"] == 503:
                message = {**message, "status": 500}
            await send(message)

        await self.app(scope, receive, patched if scope["type"] == "http" else send)


def _five_hundred() -> None:
    serve = service.serve
    service.serve = lambda app, settings: serve(FiveHundred(app), settings)


def _sticky_redis() -> None:
    check = health.check_redis
    lost: list[str] = []

    async def sticky(client):
        if lost:
            return lost[0]
        answer = await check(client)
        if answer != "ok":
            lost.append(f"sabotaged: stuck since {answer}")
        return answer

    health.check_redis = sticky


if __name__ == "__main__":
    mode, name = sys.argv[1], sys.argv[2]
    # the patches live in this process: a multi-worker API would build its app in fresh worker
    # processes that never saw them, so the sabotaged API runs as one process
    os.environ["MSGSTACK_API_WORKERS"] = "1"
    {"500": _five_hundred, "sticky-redis": _sticky_redis}[mode]()
    sys.exit(main([name]))
