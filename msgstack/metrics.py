"""Every Prometheus metric of the stack, named as the test plan names them (one place for all).

All services import this module, so each process exposes the whole set; a service only moves the
metrics of its own part, the others stay at zero.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# API
MESSAGES_ACCEPTED = Counter(
    "messaging_messages_accepted_total",
    "Messages stored with their outbox row (first acceptance only)",
)
PAYLOAD_REJECTS = Counter(
    "messaging_payload_rejects_total",
    "Messages rejected with 413 because the payload is over the limit",
)
MESSAGE_SIZE = Histogram(
    "messaging_message_size_bytes",
    "Decoded ciphertext size of accepted messages",
    buckets=(1024, 2048, 4096, 8192, 16384, 32768, 49152, 65536, 131072),
)
API_UNAVAILABLE = Counter(
    "messaging_api_unavailable_total",
    "Requests answered 503 because a dependency was unavailable",
    ["dependency"],
)

# conversations, authorization and the participant cache (API)
CONVERSATION_VERSION_CONFLICTS = Counter(
    "messaging_conversation_version_conflicts_total",
    "Conversation updates refused with 409 because their version was stale",
)
SECURITY_DENIED = Counter(
    "sanctum_security_denied_total",
    "Requests refused with 403 because the acting user is not a participant",
    ["operation"],
)
PARTICIPANT_CACHE_HITS = Counter(
    "messaging_participant_cache_hits_total",
    "Participant lookups answered from the API process' cache",
)
PARTICIPANT_CACHE_MISSES = Counter(
    "messaging_participant_cache_misses_total",
    "Participant lookups that had to query PostgreSQL",
)
PARTICIPANT_INVALIDATION_DELAY = Histogram(
    "messaging_participant_invalidation_delay_seconds",
    "Time from publishing a participant change on Redis Pub/Sub to a process dropping its entry",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
PARTICIPANT_INVALIDATIONS_PUBLISHED = Counter(
    "messaging_participant_invalidations_published_total",
    "Participant changes announced on Redis Pub/Sub",
)

# dispatcher
DISPATCH_PUBLISHED = Counter(
    "messaging_dispatch_published_total", "Outbox rows published to the stream"
)
DISPATCH_DLQ = Counter(
    "messaging_dispatch_dlq_total",
    "Outbox rows parked in the outbox DLQ after a publish failure",
    ["sink"],
)
DISPATCH_REPLAYED = Counter(
    "messaging_dispatch_replayed_total", "Parked outbox rows released for another publish attempt"
)
DISPATCH_REDISPATCHED = Counter(
    "messaging_dispatch_redispatched_total",
    "Published rows whose stream entry vanished before delivery",
)
DISPATCH_LAG = Gauge("messaging_dispatch_lag_seconds", "Age of the oldest undispatched outbox row")
OUTBOX_DEAD = Counter(
    "messaging_outbox_dead_total",
    "Outbox rows given up on after too many publish attempts (should stay 0)",
)

# consumer
CONSUMER_DELIVERED = Counter(
    "messaging_consumer_delivered_total",
    "Stream entries recorded in the deliveries ledger and acknowledged",
)
CONSUMER_REDELIVERED = Counter(
    "messaging_consumer_redelivered_total",
    "Entries whose message was already in the ledger (duplicates absorbed)",
)
CONSUMER_PEL_SIZE = Gauge("messaging_consumer_pel_size", "Pending entries of the consumer group")
CONSUMER_PEL_RECLAIMED = Counter(
    "messaging_consumer_pel_reclaimed_total", "Idle pending entries taken over with XAUTOCLAIM"
)
CONSUMER_LAG = Gauge(
    "messaging_consumer_lag_seconds",
    "Age of the oldest entry in the last processed batch (0 when caught up)",
)
CONSUMER_DEAD_LETTERS = Counter(
    "messaging_consumer_dead_letters_total",
    "Poison entries moved to the dead-letter stream",
    ["reason"],
)

# auth
AUTH_LOGIN_ATTEMPTS = Counter("auth_login_attempts_total", "POST /v1/auth/login requests")
AUTH_LOGIN_SUCCESS = Counter("auth_login_success_total", "Logins that issued a token")
AUTH_LOGIN_FAILURES = Counter(
    "auth_login_failures_total",
    "Logins that issued no token, by reason (invalid_credentials, bad_request, unavailable, "
    "overloaded)",
    ["reason"],
)
AUTH_LOGIN_SUCCESS_RATE = Gauge(
    "auth_login_success_rate",
    "auth_login_success_total / auth_login_attempts_total since the process started "
    "(1 before the first attempt)",
)
# The whole successful login: user lookup, password verification (the KDF) and token storage,
# i.e. what a client waits for to get a token. The KDF alone is auth_password_verify_seconds.
AUTH_TOKEN_LATENCY = Histogram(
    "auth_token_generation_latency",
    "Seconds from a login request's arrival to its token being stored (successful logins)",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
AUTH_VERIFY_SECONDS = Histogram(
    "auth_password_verify_seconds",
    "Seconds one argon2 verification took in the KDF thread pool (queueing excluded)",
    buckets=(0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5),
)
AUTH_KDF_PENDING = Gauge(
    "auth_kdf_pending", "Password verifications queued or running in the KDF thread pool"
)
API_UNAUTHORIZED = Counter(
    "messaging_api_unauthorized_total",
    "Requests refused with 401 (no bearer token, or one that does not resolve)",
    ["reason"],
)

LOADS_SHARED = Counter(
    "messaging_loads_shared_total",
    "Cache misses answered by a load another request of the same process had in flight "
    "(msgstack/singleflight.py): token checks against Redis, participant loads",
    ["what"],
)
API_TOKENS_REMEMBERED = Counter(
    "messaging_api_tokens_remembered_total",
    "Requests authenticated from the process's memory of resolved tokens while Redis was down",
)

# Redis client pool of this process (set at start-up; read at scrape time)
REDIS_POOL_IN_USE = Gauge(
    "redis_pool_in_use_connections", "Redis connections of this process checked out right now"
)
REDIS_POOL_UTILIZATION = Gauge(
    "redis_pool_utilization_ratio", "redis_pool_in_use_connections / redis_pool_max_connections"
)
REDIS_POOL_MAX = Gauge(
    "redis_pool_max_connections",
    "Most Redis connections this process may open (MSGSTACK_REDIS_POOL_MAX)",
)

# WebSocket gateway (msgstack/gateway.py)
WS_CONNECT = Counter("ws_connect_total", "WebSocket connections accepted (after authentication)")
WS_CLOSE = Counter(
    "ws_close_total",
    "WebSocket connections ended, by close code (the server's when it closed first, else the "
    "client's; 1006 when the connection dropped without a close frame)",
    ["code"],
)
WS_CONNECTIONS = Gauge("ws_connections", "WebSocket connections open right now")
WS_FRAMES_SENT = Counter("ws_frame_sent_total", "Message frames written to WebSockets")
WS_OVERLOAD = Counter(
    "ws_overload_total", "Sockets closed with 1013 because their bounded send queue was full"
)
WS_HEARTBEAT_TERMINATE = Counter(
    "ws_heartbeat_terminate_total", "Sockets terminated because they missed a heartbeat (ping)"
)
WS_AUTH_REFUSED = Counter(
    "ws_auth_refused_total",
    "WebSocket upgrades refused before the handshake (missing/invalid token: 401; redis: 503)",
    ["reason"],
)
WS_MALFORMED = Counter(
    "ws_malformed_frames_total", "Client frames that were not a JSON ping (socket closed 1003)"
)
WS_RESUME = Counter("ws_resume_total", "Connections that resumed after a seq")
WS_RESUME_FRAMES = Counter("ws_resume_frames_total", "Frames sent while resuming (missed ones)")
WS_UNWATCHED = Counter(
    "ws_stream_entries_unwatched_total",
    "Stream entries the gateway passed while no socket was connected (rows not read)",
)
WS_E2E_LATENCY = Histogram(
    "ws_delivery_latency_seconds",
    "Accepted by the API -> frame written to the socket (live frames)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# the process itself (msgstack/gctune.py)
GC_SECONDS = Counter(
    "msgstack_gc_seconds_total",
    "CPU time the Python garbage collector spent in collections, by generation",
    ["generation"],
)
