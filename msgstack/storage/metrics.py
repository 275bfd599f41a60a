"""The storage layer's Prometheus metrics (plan tests 7, 10 and 13), one place for all of them.

`storage_circuit_breaker_transitions` is a counter, so prometheus-client exposes its samples as
``storage_circuit_breaker_transitions_total{adapter,state}`` (the plan's name plus the counter
suffix every Prometheus client adds).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RETRIES = Counter(
    "storage_retries_total", "Operations tried again after a transient failure", ["adapter"]
)
ERRORS = Counter(
    "storage_errors_total",
    "Failed storage operations by error type (after retries; breaker rejections excluded)",
    ["adapter", "type"],
)
REJECTED = Counter(
    "storage_rejected_total",
    "Operations refused at once because the adapter's circuit breaker was open",
    ["adapter"],
)
TRANSITIONS = Counter(
    "storage_circuit_breaker_transitions",
    "Circuit breaker state changes, by the state entered (closed, open, half_open)",
    ["adapter", "state"],
)
BREAKER_STATE = Gauge(
    "storage_circuit_breaker_state",
    "Current breaker state: 0 closed, 1 open, 2 half_open",
    ["adapter"],
)
LATENCY = Histogram(
    "storage_operation_seconds",
    "Duration of storage operations (retries included), successful or not",
    ["adapter"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CACHE_HITS = Counter("storage_cache_hits_total", "Cache reads answered from the cache")
CACHE_MISSES = Counter("storage_cache_misses_total", "Cache reads that went to PostgreSQL")
CACHE_HIT_RATIO = Gauge(
    "storage_cache_hit_ratio", "Cache hits / (hits + misses) since the process started"
)
POOL_MAX = Gauge("storage_pool_max", "Maximum size of the PostgreSQL pool (MSGSTACK_POOL_MAX)")
POOL_SIZE = Gauge("storage_pool_size", "Open connections in the PostgreSQL pool")
POOL_IN_USE = Gauge("storage_pool_in_use", "Pooled connections checked out right now")
POOL_WAITING = Gauge("storage_pool_waiting", "Operations waiting for a pooled connection right now")
POOL_TIMEOUTS = Counter(
    "storage_pool_acquire_timeouts_total",
    "Operations that gave up waiting for a pooled connection",
)
