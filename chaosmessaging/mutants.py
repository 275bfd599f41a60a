"""The catalogue of mutants: deliberate, realistic bugs of the reference stack, and the
experiments that must catch each (`chaosmessaging selfcheck`).

A mutant is switched on with `MSGSTACK_MUTANT=<name>` at a marked point of the reference services
(`mutants.on("<name>")` in `msgstack`, or `mutants.once("<name>")` for a bug that strikes once per
process: a `one_shot` mutant). The catalogue is data: `CATALOGUE` holds one `Mutant` per bug; an
experiment added later registers its own with `register(Mutant(...))` (and adds the matching switch
to the reference stack).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MUTANT_ENV", "Mutant", "CATALOGUE", "register", "by_name"]

MUTANT_ENV = "MSGSTACK_MUTANT"


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug of the reference stack and the experiments that must catch it."""

    name: str  # the MSGSTACK_MUTANT value switching it on
    service: str  # where the bug lives
    bug: str  # what is broken, one sentence
    experiments: tuple[str, ...]  # experiment file names (without .json) that must deviate
    # strikes once per process of its service (`mutants.once(name)` in the reference stack):
    # once per stack, so such a mutant names one experiment
    one_shot: bool = False

    def environment(self) -> dict[str, str]:
        """The environment switching it on, for every service of its stack and the chaos run."""
        return {MUTANT_ENV: self.name}


CATALOGUE: list[Mutant] = [
    Mutant(
        "consumer_ack_before_record",
        "consumer",
        "XACKs a batch before recording its deliveries: a kill in between loses the batch",
        ("consumer_resilience",),
    ),
    Mutant(
        "consumer_no_reclaim",
        "consumer",
        "never reclaims pending entries (no XAUTOCLAIM): a killed consumer's batch stays "
        "pending for ever",
        ("consumer_resilience",),
    ),
    Mutant(
        "consumer_dead_letters_on_lost_connection",
        "consumer",
        "takes a lost or refused PostgreSQL connection for a bad batch and dead-letters it "
        "(timeouts are retried): a batch held while PostgreSQL is down is lost",
        ("cascading_failure",),
    ),
    Mutant(
        "dispatcher_mark_on_failure",
        "dispatcher",
        "marks an outbox batch dispatched when XADD failed: rows written during a Redis "
        "outage are forgotten",
        ("redis_partition",),
    ),
    Mutant(
        "dispatcher_no_replay",
        "dispatcher",
        "parks rows when Redis fails but never replays them after it recovers",
        ("redis_partition",),
    ),
    Mutant(
        "consumer_sticky_backoff",
        "consumer",
        "backs off (0.5 s per read) after one slow XACK and never resets the back-off",
        ("redis_latency",),
    ),
    Mutant(
        "dispatcher_sticky_backoff",
        "dispatcher",
        "slows its idle poll to 1 s after one slow publish and never speeds up again",
        ("redis_latency",),
    ),
    Mutant(
        "dispatcher_slow_idle_poll",
        "dispatcher",
        "idle poll interval of 8 s (seconds where milliseconds were meant): dispatch lag "
        "grows to seconds",
        ("message_soak",),
    ),
    Mutant(
        "consumer_unbounded_cache",
        "consumer",
        "keeps 16 KiB per delivered message in a cache that is never evicted: memory grows "
        "with every message",
        ("message_soak",),
    ),
    Mutant(
        "api_memo_bounded_by_conversations",
        "api",
        "keeps every accepted message's payload in an idempotency memo bounded by conversations "
        "(1000), not messages: about a kilobyte per message, never evicted while few "
        "conversations are busy",
        ("message_soak",),
    ),
    Mutant(
        "storage_leak_on_error",
        "api",
        "the PostgreSQL adapter skips giving its pooled connection back when the work fails: "
        "the pool never drains after timeouts",
        ("pool_exhaustion",),
    ),
    Mutant(
        "storage_breaker_never_closes",
        "api",
        "circuit breakers stay open for an hour: PostgreSQL answers again but the API keeps "
        "refusing",
        ("pool_exhaustion",),
    ),
    Mutant(
        "storage_cache_never_fills",
        "api",
        "the cache adapter loads on a miss but never stores the value: every read goes to "
        "PostgreSQL",
        ("multi_adapter_soak",),
    ),
    Mutant(
        "storage_cache_expires_at_once",
        "api",
        "cache entries live MSGSTACK_CACHE_TTL_S milliseconds (seconds were meant): the hit "
        "ratio collapses",
        ("multi_adapter_soak",),
    ),
    Mutant(
        "conversations_last_write_wins",
        "api",
        "updates a conversation without comparing its version: a stale update silently "
        "overwrites a newer one (no 409)",
        ("conversation_stress",),
    ),
    Mutant(
        "list_cursor_whole_seconds",
        "api",
        "the conversation list's cursor keeps whole seconds of its timestamp: the next page "
        "skips the user's conversations joined earlier in the same second as a page's last one",
        ("conversation_stress",),
    ),
    Mutant(
        "participants_cache_never_fills",
        "api",
        "the participant cache loads on a miss but never stores: every authorization goes to "
        "PostgreSQL",
        ("conversation_stress", "multi_user_conversation"),
    ),
    Mutant(
        "participants_no_invalidation",
        "api",
        "a participant change drops the writer's own cache entry but never tells the other API "
        "processes: they keep authorizing a removed user",
        ("participant_invalidation",),
    ),
    Mutant(
        "participants_slow_invalidation",
        "api",
        "the invalidation subscriber naps 300 ms between messages: invalidations queue up and "
        "are applied late",
        ("participant_invalidation",),
    ),
    Mutant(
        "auth_unbounded_audit_log",
        "auth",
        "keeps 256 KiB of every login in an audit list that is never trimmed: memory grows with "
        "every login",
        ("sustained_login",),
    ),
    Mutant(
        "auth_equalizer_strong_dummy",
        "auth",
        "a timing equalizer verifies every login against a dummy hash as well, a dummy hashed at "
        "five times the configured cost: each login costs six verifications",
        ("sustained_login",),
    ),
    Mutant(
        "auth_leaks_redis_connection",
        "auth",
        "checks a Redis connection out per login and never gives it back: the pool runs dry",
        ("sustained_login",),
    ),
    Mutant(
        "health_500_when_degraded",
        "every service",
        "the readiness handler fails with 500 when a dependency is down, instead of a 503 "
        "saying which one",
        ("cascading_failure",),
    ),
    Mutant(
        "health_memo_postgres_ok",
        "every service",
        "readiness trusts a successful PostgreSQL check for 3 s without asking again (failures "
        "are re-checked): /readyz says 200 for up to 3 s after the database died",
        ("cascading_failure",),
    ),
    Mutant(
        "health_sticky_redis",
        "every service",
        "once a Redis check failed, readiness reports Redis down for ever: no recovery after "
        "Redis comes back empty",
        ("cascading_failure",),
    ),
    Mutant(
        "migrate_strips_concurrently",
        "migrate",
        "the migration runner drops CONCURRENTLY from index builds: the build locks the table "
        "against writes",
        ("migration_under_load",),
    ),
    Mutant(
        "migrate_volatile_default",
        "migrate",
        "the new column's default is computed per row (volatile): PostgreSQL rewrites the whole "
        "table under an exclusive lock",
        ("migration_under_load",),
    ),
    Mutant(
        "gateway_drops_a_frame",
        "gateway",
        "loses one frame on its way to a socket, silently",
        ("mixed_load",),
        one_shot=True,
    ),
    Mutant(
        "gateway_flush_interval_in_s",
        "gateway",
        "waits 4 s before flushing a socket's queue (a 4 ms batching delay read as seconds): "
        "end-to-end latency in seconds",
        ("mixed_load",),
    ),
    Mutant(
        "gateway_corrupts_a_byte",
        "gateway",
        "flips one byte of one payload on its way out",
        ("large_payload",),
        one_shot=True,
    ),
    Mutant(
        "gateway_conflates_a_busy_socket",
        "gateway",
        "keeps only the 8 newest frames queued for a socket that reads slowly (a 'latest only' "
        "shortcut meant for typing indicators): a slow reader silently misses messages, no "
        "1013, no ws_overload_total",
        ("large_payload",),
    ),
    Mutant(
        "api_payload_limit_in_kb",
        "api",
        "takes the 64 KiB payload limit as 64 kB (64000 bytes): the largest legal messages are "
        "refused with 413",
        ("large_payload",),
    ),
    Mutant(
        "gateway_subscriptions_never_dropped",
        "gateway",
        "subscribes a socket to a conversation at its first frame and never unsubscribes it: a "
        "removed participant's already-open devices keep receiving the conversation",
        ("multi_user_conversation",),
    ),
    Mutant(
        "gateway_leaks_a_frame",
        "gateway",
        "sends one frame to a socket of a user outside the conversation",
        ("multi_user_conversation",),
        one_shot=True,
    ),
    Mutant(
        "gateway_closes_a_socket",
        "gateway",
        "closes a healthy client's socket after a frame",
        ("websocket_longevity",),
        one_shot=True,
    ),
    Mutant(
        "gateway_keeps_sent_frames",
        "gateway",
        "keeps 256 KiB of every frame it sent in a buffer that is never trimmed: memory grows "
        "with every frame",
        ("websocket_longevity",),
    ),
    Mutant(
        "gateway_no_resume",
        "gateway",
        "ignores a reconnecting client's resume point: what it missed while away is never sent",
        ("gateway_restart",),
    ),
    Mutant(
        "gateway_resume_skips_one",
        "gateway",
        "resumes one frame too late (an off-by-one on the resume point): each reconnecting "
        "socket misses one message",
        ("gateway_restart",),
    ),
]


def register(mutant: Mutant, replace: bool = False) -> None:
    """Add a mutant to the catalogue (new experiments bring their own)."""
    known = {m.name: n for n, m in enumerate(CATALOGUE)}
    if mutant.name in known:
        if not replace:
            raise ValueError(f"mutant {mutant.name!r} is already in the catalogue")
        CATALOGUE[known[mutant.name]] = mutant
    else:
        CATALOGUE.append(mutant)


def by_name(name: str) -> Mutant:
    """The catalogue's mutant called `name` (KeyError when there is none)."""
    for mutant in CATALOGUE:
        if mutant.name == name:
            return mutant
    raise KeyError(name)
