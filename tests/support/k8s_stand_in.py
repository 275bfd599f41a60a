"""A stand-in Kubernetes API server (and kubelet, and ReplicaSet controller) on loopback.

No Kubernetes API server can run on these machines, so the `kubernetes` backend is tested against
this: a Starlette app serving the few endpoints the official client calls (list / read / delete
pods, the pod `exec` WebSocket), backed by **real processes**: each pod runs a real HTTP server
process; a pod is Ready once that process answers; a container whose process dies is restarted in
place (restartCount + 1, a new startedAt), the way a kubelet does; a deleted pod's process is
signalled (SIGKILL for grace 0, SIGTERM otherwise) and a controller creates a replacement with a
new UID. `exec` runs only ``kill -s SIG 1``, delivering SIG to the pod's process.

It checks the bearer token on every call. It is not Kubernetes: no watch, no field selectors,
no admission, equality label selectors only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from chaosmessaging.stack.servers import free_port


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Pod:
    name: str
    labels: dict
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: str = field(default_factory=_now)
    port: int = 0
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: str | None = None
    ready: bool = False
    deleting: str | None = None
    kill_at: float | None = None

    def spawn(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started_at, self.ready = _now(), False

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def to_json(self, namespace: str) -> dict:
        running = self.proc is not None and self.proc.poll() is None
        state = (
            {"running": {"startedAt": self.started_at}}
            if running
            else {"waiting": {"reason": "ContainerCreating"}}
        )
        metadata = {
            "name": self.name,
            "namespace": namespace,
            "uid": self.uid,
            "labels": self.labels,
            "creationTimestamp": self.created,
        }
        if self.deleting:
            metadata["deletionTimestamp"] = self.deleting
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {"containers": [{"name": "app", "image": "stand-in/http-server"}]},
            "status": {
                "phase": "Running" if running else "Pending",
                "startTime": self.created,
                "conditions": [
                    {"type": "Ready", "status": "True" if self.ready and running else "False"}
                ],
                "containerStatuses": [
                    {
                        "name": "app",
                        "image": "stand-in/http-server",
                        "imageID": "",
                        "ready": bool(self.ready and running),
                        "restartCount": self.restarts,
                        "started": running,
                        "state": state,
                    }
                ],
            },
        }


class StandInCluster:
    """One namespace; `deployments` = {name: (labels, replicas)}; `token` required on calls."""

    def __init__(self, namespace: str, deployments: dict, token: str):
        self.namespace, self.deployments, self.token = namespace, deployments, token
        self.pods: dict[str, Pod] = {}
        self.calls: list[str] = []
        self._lock = threading.RLock()
        self._names = itertools.count(1)
        self._halt = threading.Event()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        )

    # -- the kubelet and the controller --------------------------------------------------

    def _reconcile(self) -> None:
        while not self._halt.is_set():
            with self._lock:
                for name, pod in list(self.pods.items()):
                    exited = pod.proc is not None and pod.proc.poll() is not None
                    if pod.deleting:
                        if pod.kill_at is not None and time.time() >= pod.kill_at:
                            pod.signal(signal.SIGKILL)
                        if exited:
                            del self.pods[name]
                    elif exited:  # the container died: restart it in place
                        pod.restarts += 1
                        pod.spawn()
                for deployment, (labels, replicas) in self.deployments.items():
                    live = [p for p in self.pods.values() if not p.deleting and p.labels == labels]
                    for _ in range(replicas - len(live)):
                        pod = Pod(f"{deployment}-{next(self._names):05d}", dict(labels))
                        pod.spawn()
                        self.pods[pod.name] = pod
                pending = [p for p in self.pods.values() if not p.deleting]
            for pod in pending:  # readiness probe, outside the lock
                try:
                    ok = httpx.get(f"http://127.0.0.1:{pod.port}/", timeout=0.5).status_code == 200
                except httpx.HTTPError:
                    ok = False
                pod.ready = ok
            self._halt.wait(0.1)

    # -- the API -------------------------------------------------------------------------

    def _authorized(self, headers) -> bool:
        return headers.get("authorization") == f"Bearer {self.token}"

    def _matches(self, pod: Pod, selector: str) -> bool:
        wanted = dict(p.split("=", 1) for p in selector.split(",") if "=" in p)
        return all(pod.labels.get(k) == v for k, v in wanted.items())

    def _app(self) -> Starlette:
        unauthorized = JSONResponse(
            {"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401}, 401
        )

        def not_found(name: str) -> JSONResponse:
            return JSONResponse(
                {
                    "kind": "Status",
                    "status": "Failure",
                    "reason": "NotFound",
                    "code": 404,
                    "message": f'pods "{name}" not found',
                },
                404,
            )

        async def list_pods(request: Request):
            self.calls.append(f"list {request.query_params.get('labelSelector', '')}")
            if not self._authorized(request.headers):
                return unauthorized
            if request.path_params["ns"] != self.namespace:
                items = []
            else:
                with self._lock:
                    selector = request.query_params.get("labelSelector", "")
                    items = [
                        p.to_json(self.namespace)
                        for p in self.pods.values()
                        if self._matches(p, selector)
                    ]
            return JSONResponse(
                {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
            )

        async def pod(request: Request):
            name = request.path_params["name"]
            self.calls.append(f"{request.method.lower()} {name}")
            if not self._authorized(request.headers):
                return unauthorized
            with self._lock:
                found = self.pods.get(name)
                if found is None or request.path_params["ns"] != self.namespace:
                    return not_found(name)
                if request.method == "DELETE":
                    body = json.loads(await request.body() or b"{}")
                    grace = body.get("gracePeriodSeconds")
                    grace = 30 if grace is None else int(grace)
                    found.deleting = found.deleting or _now()
                    found.ready = False
                    found.signal(signal.SIGKILL if grace == 0 else signal.SIGTERM)
                    found.kill_at = time.time() + grace
                return JSONResponse(found.to_json(self.namespace))

        async def exec_(ws: WebSocket):
            command = ws.query_params.getlist("command")
            self.calls.append(f"exec {ws.path_params['name']} {' '.join(command)}")
            if not self._authorized(ws.headers):
                await ws.close(code=1008)
                return
            await ws.accept(subprotocol="v4.channel.k8s.io")
            status = {"metadata": {}, "status": "Success"}
            with self._lock:
                found = self.pods.get(ws.path_params["name"])
                if (
                    found is None
                    or len(command) != 4
                    or command[:2] != ["kill", "-s"]
                    or command[3] != "1"
                ):
                    status = {
                        "metadata": {},
                        "status": "Failure",
                        "message": "the stand-in execs only `kill -s SIG 1` in a known pod",
                        "reason": "NonZeroExitCode",
                        "details": {"causes": [{"reason": "ExitCode", "message": "126"}]},
                    }
                else:
                    found.signal(getattr(signal, f"SIG{command[2]}"))
            await ws.send_bytes(bytes([3]) + json.dumps(status).encode())
            await ws.close()

        base = "/api/v1/namespaces/{ns}/pods"
        return Starlette(
            routes=[
                Route(base, list_pods),
                Route(base + "/{name}", pod, methods=["GET", "DELETE"]),
                WebSocketRoute(base + "/{name}/exec", exec_),
            ]
        )

    # -- lifecycle -----------------------------------------------------------------------

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        want = sum(r for _, r in self.deployments.values())
        while time.monotonic() < deadline:
            with self._lock:
                ready = [p for p in self.pods.values() if p.ready and not p.deleting]
            if len(ready) >= want:
                return
            time.sleep(0.1)
        raise AssertionError(f"stand-in pods not ready within {timeout:g} s")

    def __enter__(self) -> StandInCluster:
        self._threads = [
            threading.Thread(target=lambda: asyncio.run(self._server.serve()), daemon=True),
            threading.Thread(target=self._reconcile, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self._halt.set()
        self._server.should_exit = True
        for thread in self._threads:
            thread.join(10)
        with self._lock:
            for pod in self.pods.values():
                pod.signal(signal.SIGKILL)
                if pod.proc is not None:
                    pod.proc.wait(5)
