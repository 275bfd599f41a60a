"""Message accounting: prove that every message a load run got acknowledged was delivered.

A run's messages are those whose `client_msg_id` starts with `<run_id>:` (k6 scripts tag them
so). Each is matched to the deliveries ledger (`deliveries`, one row per message; see
docs/reference-stack.md); what is still missing after a settle time is lost, reported by id.
The k6 summary's accepted counter cross-checks the database: a 202 the API gave for a message
the database does not hold is loss before the outbox.
"""

from chaoslib.types import Configuration, Secrets

from chaosmessaging.needs.catalogue import platform_applies
from chaosmessaging import runs
from chaosmessaging.clients.postgres import pg_fetch
from chaosmessaging.util import home_of
from chaosmessaging.evidence.ledger import ledger_accounting
from chaosmessaging.verdicts import Verdict, judges_method, logged, verdict

__all__ = ["delivery_latency", "latency_recovered", "message_accounting", "payloads_intact"]


@platform_applies
def message_accounting(
    run_id: str = None,
    settle_timeout: float = 60.0,
    poll_interval: float = 1.0,
    late_after_s: float = None,
    k6_summary_path: str = None,
    accepted_metric: str = "messages_accepted",
    max_ids: int = 50,
    check_stream: bool = False,
    stream_scan_max: int = 200000,
    place_scan_max: int = 10000,
    dsn: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Account for every message of the load run `run_id` (messages whose `client_msg_id`
    starts with `<run_id>:`) — by default every load of the current experiment run (see
    `chaosmessaging.runs`), with their k6 summaries — waiting up to `settle_timeout` seconds
    for in-flight ones to be
    delivered. Returns
    `{"run_id", "acknowledged", "delivered", "lost", "lost_ids", "last_seen",
    "last_seen_ids", "pending", "parked", "dead", "redelivered", "duplicated", "late",
    "k6_accepted", "api_acknowledged_missing", "settled_s"}` with `ok` and `reason`:
    `lost` messages have no delivery (their `client_msg_id`s, at most `max_ids`, in
    `lost_ids`). `last_seen` counts where each was last seen (at most `place_scan_max` looked
    up), `last_seen_ids` lists them by place: `undispatched` (outbox row waiting),
    `parked` (outbox DLQ), `dead` (outbox row given up on, `dead_at`), `in_stream`
    (published, the entry in the stream but not pending in the group), `pending` (delivered
    to a consumer, never acknowledged), `nowhere` (no outbox row, or marked dispatched but its
    stream entry is gone or was never written). `pending` (figure) is still-in-the-outbox
    (undispatched + parked), `parked` and `dead` repeat those places;
    `redelivered` were delivered again and suppressed by idempotency; `late` were
    delivered more than `late_after_s` seconds after creation (null when not asked);
    `k6_accepted` is the `accepted_metric` count of the k6 summary at `k6_summary_path`
    (null without one) and `api_acknowledged_missing` how many accepted messages the database
    does not hold. With `check_stream`, the stream (`messaging_stream`, at most
    `stream_scan_max` entries) is also scanned: `stream_duplicates` counts the run's messages
    published more than once (the consumer must have suppressed them), else it is null.
    """
    prefix, k6_summaries = _scope(run_id, k6_summary_path, configuration)
    return ledger_accounting(
        prefix,
        k6_summaries,
        run_id=run_id or prefix.rstrip("/:"),
        expected=bool(run_id) or runs.method_started(home_of(configuration)),
        settle_timeout=float(settle_timeout),
        poll_interval=float(poll_interval),
        late_after_s=late_after_s,
        accepted_metric=accepted_metric,
        max_ids=int(max_ids),
        check_stream=bool(check_stream),
        stream_scan_max=int(stream_scan_max),
        place_scan_max=int(place_scan_max),
        dsn=dsn,
        configuration=configuration,
        secrets=secrets,
    )


def _scope(
    run_id: str | None, k6_summary_path: str | None, configuration: Configuration
) -> tuple[str, list[str]]:
    """The message prefix and k6 summaries to account for: an explicit run, or this run's loads."""
    if run_id:
        return f"{run_id}:", [k6_summary_path] if k6_summary_path else []
    home = home_of(configuration)
    summaries = (
        [k6_summary_path]
        if k6_summary_path
        else [load["summary_path"] for load in runs.loads(home) if load.get("summary_path")]
    )
    return runs.message_prefix(None, home), summaries


_LATENCY = """
SELECT count(d.message_id) AS delivered,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
         ORDER BY extract(epoch FROM d.delivered_at - m.created_at) * 1000) AS pct
FROM messages m JOIN deliveries d ON d.message_id = m.id
WHERE starts_with(m.client_msg_id, $1)
"""


def delivery_latency(
    label: str = None,
    run_id: str = None,
    dsn: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    End-to-end delivery latency (API accepted -> delivery recorded in the ledger) of one load
    of the current run (`label`), of all its loads, or of an explicit `run_id`, from the
    database clock: `{"delivered": N, "p50_ms", "p95_ms", "p99_ms"}` (nulls when none).
    """
    prefix = f"{run_id}:" if run_id else runs.message_prefix(label, home_of(configuration))
    row = pg_fetch(_LATENCY, (prefix,), dsn, configuration, secrets)[0]
    pct = list(row["pct"] or [None, None, None])
    rounded = [None if v is None else round(float(v), 2) for v in pct]
    return {
        "scope": prefix,
        "delivered": row["delivered"],
        "p50_ms": rounded[0],
        "p95_ms": rounded[1],
        "p99_ms": rounded[2],
    }


@platform_applies
@judges_method()
def latency_recovered(
    baseline: str = "baseline",
    degraded: str = "degraded",
    recovered: str = "recovered",
    min_degradation_ms: float = 100.0,
    recovery_factor: float = 1.5,
    slack_ms: float = 50.0,
    dsn: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict of a degrade-and-recover latency experiment over three labelled loads: delivery p95
    under the fault exceeds the baseline's by at least `min_degradation_ms` (the fault bit),
    and after it p95 is at most `baseline * recovery_factor + slack_ms`. Returns the three
    phases' figures and `ok`. Before the method ran it holds trivially (`"phase": "before"`).
    """
    phases = {
        name: delivery_latency(label, dsn=dsn, configuration=configuration, secrets=secrets)
        for name, label in (
            ("baseline", baseline),
            ("degraded", degraded),
            ("recovered", recovered),
        )
    }
    p95 = {name: figures["p95_ms"] for name, figures in phases.items()}
    if None in p95.values():
        return verdict(False, "a phase delivered no message", phases=phases)
    degradation = p95["degraded"] - p95["baseline"]
    ceiling = p95["baseline"] * float(recovery_factor) + float(slack_ms)
    result = {
        "degradation_ms": round(degradation, 2),
        "recovery_ceiling_ms": round(ceiling, 2),
        "degraded_enough": degradation >= float(min_degradation_ms),
        "back_to_baseline": p95["recovered"] <= ceiling,
        "phases": phases,
    }
    reason = (
        f"delivery p95 baseline {p95['baseline']} ms, degraded {p95['degraded']} ms "
        f"(needs +{float(min_degradation_ms):g}), recovered {p95['recovered']} ms "
        f"(ceiling {ceiling:.1f})"
    )
    return logged(
        verdict(result["degraded_enough"] and result["back_to_baseline"], reason, **result)
    )


# k6/message_load.js with DIGEST=1 ends each client_msg_id with ".<sha256 hex of the payload>"
_INTACT = """
SELECT count(*) AS messages,
       count(*) FILTER (WHERE d.digest IS NULL) AS undigested,
       count(*) FILTER (WHERE d.digest IS NOT NULL
                        AND d.digest <> encode(sha256(m.ciphertext), 'hex')) AS corrupted,
       count(*) FILTER (WHERE octet_length(m.ciphertext) <> m.size_bytes) AS size_mismatch,
       coalesce((array_agg(m.client_msg_id ORDER BY m.created_at) FILTER (
         WHERE d.digest <> encode(sha256(m.ciphertext), 'hex')))[1:$2], '{}') AS corrupted_ids
FROM messages m,
     LATERAL (SELECT substring(m.client_msg_id FROM '\\.([0-9a-f]{64})$') AS digest) d
WHERE starts_with(m.client_msg_id, $1)
"""
_INTACT_FIGURES = {
    "messages": 0,
    "corrupted": 0,
    "undigested": 0,
    "size_mismatch": 0,
    "corrupted_ids": [],
}


@platform_applies
@judges_method(**_INTACT_FIGURES)
def payloads_intact(
    run_id: str = None,
    max_ids: int = 20,
    timeout: float = 300.0,
    dsn: str = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: every stored message of the run (by default this experiment run's loads) holds
    exactly the bytes the client sent: k6/message_load.js run with `DIGEST=1` ends each
    `client_msg_id` with `.<sha256 of the payload>`, compared here with the SHA-256 of the
    stored ciphertext (computed by PostgreSQL). Figures: `messages`, `corrupted` (ids in
    `corrupted_ids`), `undigested` (messages without a digest: the load forgot DIGEST=1),
    `size_mismatch`. No message, or any undigested one, fails: nothing would be proven.
    The query reads every payload of the run: `timeout` (seconds) bounds it.
    """
    prefix, _ = _scope(run_id, None, configuration)
    row = pg_fetch(
        _INTACT, (prefix, int(max_ids)), dsn, configuration, secrets, timeout=float(timeout)
    )[0]
    figures = {k: (list(row[k]) if k == "corrupted_ids" else int(row[k])) for k in _INTACT_FIGURES}
    problems = []
    if figures["messages"] == 0:
        problems.append(f"no message of this run ('{prefix}') is stored")
    if figures["undigested"]:
        problems.append(
            f"{figures['undigested']} messages carry no digest (run the load with DIGEST=1)"
        )
    if figures["corrupted"]:
        problems.append(f"{figures['corrupted']} payloads differ from what was sent")
    if figures["size_mismatch"]:
        problems.append(f"{figures['size_mismatch']} size_bytes differ from the stored bytes")
    reason = "; ".join(problems) or f"all {figures['messages']} payloads intact (SHA-256)"
    return logged(verdict(not problems, reason, **figures))
