"""Login latency judged against what one login must cost on this machine (plan test 6).

A login's cost is one password verification with the platform's KDF (the plan: argon2id at the
OWASP minimum, m=19 MiB t=2 p=1, about 25 ms of CPU). An absolute latency limit that holds on a
loaded shared CI machine (seconds) lets a login six times slower pass; one that catches it
(tens of milliseconds) fails on a busy machine. `kdf_reference` times that KDF here, in the same
run, beside the load (the median of a few hashes, before and after it, so a busy machine slows
the reference as it slows the service), and `login_latency_within_reference` judges the login
median (or another quantile) as clients saw it (the k6 load's `http_req_duration`) and as the
auth service measured it (`auth_token_generation_latency`, since a `snapshot_metrics`) against a
multiple of it.
"""

from __future__ import annotations

import secrets as _secrets
import statistics
import time

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import runs
from chaosmessaging.probes.k6 import k6_metric
from chaosmessaging.probes.metrics import histogram_quantile_within
from chaosmessaging.util import home_of
from chaosmessaging.verdicts import Verdict, judges_method, logged, verdict

__all__ = ["kdf_reference", "login_latency_within_reference"]

_KDF = runs.Snapshots(
    "kdf", "no reference KDF time under {label!r}: run kdf_reference(label={label!r}) in the method"
)


def _hash_seconds(time_cost: int, memory_kib: int, parallelism: int) -> float:
    try:
        from argon2.low_level import Type, hash_secret_raw
    except ImportError:
        raise ActivityFailed(
            "argon2-cffi is needed to time the reference KDF: pip install 'chaosmessaging[stack]'"
        ) from None
    started = time.perf_counter()
    hash_secret_raw(
        _secrets.token_bytes(24),
        _secrets.token_bytes(16),
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=parallelism,
        hash_len=32,
        type=Type.ID,
    )
    return time.perf_counter() - started


def kdf_reference(
    label: str = "login",
    rounds: int = 5,
    time_cost: int = 2,
    memory_kib: int = 19456,
    parallelism: int = 1,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """
    Time `rounds` argon2id hashes with the given cost (default: the plan's, OWASP minimum) on
    this machine and record them under `label` (called again later in the run, the rounds add
    up: before and after a load, say). Returns `{"label", "seconds", "median_s"}` (median over
    every round recorded under the label).
    """
    rounds = int(rounds)
    if not 1 <= rounds <= 50:
        raise ActivityFailed(f"rounds={rounds} must be in 1..50")
    taken = [
        _hash_seconds(int(time_cost), int(memory_kib), int(parallelism)) for _ in range(rounds)
    ]
    seconds = list(_KDF.get(label, configuration, [])) + [round(s, 5) for s in taken]
    _KDF.record(label, seconds, configuration)
    median = statistics.median(seconds)
    logger.info(f"reference KDF {label!r}: median {median * 1000:.1f} ms over {len(seconds)}")
    return {"label": label, "seconds": seconds, "median_s": round(median, 5)}


def _k6_stat(quantile: float) -> str:
    stat = {0.5: "med", 0.9: "p(90)", 0.95: "p(95)"}.get(quantile)
    if stat is None:
        raise ActivityFailed(f"quantile={quantile:g}: use 0.5, 0.9 or 0.95 (k6's summary)")
    return stat


def _judgeable(arguments: dict) -> None:
    float(arguments["factor"])
    _k6_stat(float(arguments["quantile"]))


@judges_method(_judgeable, reference_ms=None, limit_ms=None)
def login_latency_within_reference(
    factor: float,
    quantile: float = 0.5,
    reference: str = "login",
    since: str = "t6",
    load: str = "logins",
    service: str = "auth",
    metric: str = "auth_token_generation_latency",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Verdict:
    """
    Verdict: the login latency `quantile` (0.5, the default, or 0.95) as clients saw it (the
    k6 load `load`'s http_req_duration) and as the service measured it (histogram `metric` on
    `service` since the snapshot `since`) are each at most `factor` times the reference KDF
    time recorded by `kdf_reference(label=reference)` in this run: a login costs about one KDF,
    so a slower KDF, a second verification or a KDF that waits behind the event loop shows as
    a multiple of it on any machine. The median carries the KDF's cost whole while the tail
    also carries a shared machine's queueing. Figures: `reference_ms`, `limit_ms`,
    `client_ms`, `server_ms`, `ratio` (client / reference), `quantile`.
    """
    factor, quantile = float(factor), float(quantile)
    stat = _k6_stat(quantile)
    seconds = _KDF.get(reference, configuration)
    if not seconds:
        return verdict(False, _KDF.missing_reason(reference), reference_ms=None, limit_ms=None)
    reference_s = statistics.median(seconds)
    limit_s = factor * reference_s
    started = runs.loads(home_of(configuration), load)
    if not started:
        return verdict(
            False, f"no load labelled {load!r} in this run", reference_ms=None, limit_ms=None
        )
    client_ms = k6_metric(started[-1]["summary_path"], "http_req_duration", stat, default=-1)
    client_ms = None if client_ms < 0 else client_ms
    server = histogram_quantile_within(
        since, metric, limit_s, quantile, service, configuration=configuration, secrets=secrets
    )
    server_ms = None if server.get("value") is None else float(server["value"]) * 1000
    figures = dict(
        reference_ms=round(reference_s * 1000, 2),
        factor=factor,
        limit_ms=round(limit_s * 1000, 1),
        quantile=quantile,
        client_ms=None if client_ms is None else round(float(client_ms), 1),
        server_ms=None if server_ms is None else round(server_ms, 1),
        ratio=None if client_ms is None else round(float(client_ms) / 1000 / reference_s, 2),
    )
    problems = []
    if client_ms is None:
        problems.append(f"no http_req_duration {stat} in the summary of load {load!r}")
    elif float(client_ms) > limit_s * 1000:
        problems.append(
            f"clients saw a login p{quantile * 100:g} of {float(client_ms):.0f} ms, "
            f"{figures['ratio']:g}x the "
            f"reference KDF ({figures['reference_ms']:g} ms)"
        )
    if server_ms is None:
        problems.append(f"{metric}: {server['reason']}")
    elif not server["ok"]:
        problems.append(f"the service measured a token p{quantile * 100:g} of {server_ms:.0f} ms")
    reason = (
        "; ".join(problems) + f" (limit {factor:g} x {figures['reference_ms']:g} ms)"
        if problems
        else (
            f"login p{quantile * 100:g} {figures['client_ms']:g} ms (clients), {server_ms:.0f} ms "
            f"(service), limit {factor:g} x the reference KDF {figures['reference_ms']:g} ms"
        )
    )
    return logged(verdict(not problems, reason, **figures), "login latency")
