// Multi-adapter soak (plan test 7): one arrival rate split across the storage adapters.
//
// Each iteration draws an operation of the platform file: PostgreSQL write (`send`; reference:
// POST /v1/messages), stream publish (`endpoints.storage_event`: POST /v1/storage/events) or
// cache read (`endpoints.storage_summary`: GET /v1/storage/conversations/<key>/summary over a
// fixed set of CACHE_KEYS conversations, so a warm cache can answer). Shares default to the
// plan's 40/30/30.
// Authentication as in lib/auth.js (setup() logs LOGIN_SESSIONS users in through AUTH_URL, or
// TOKEN is used as is; a 401 logs in again).
// Env: API_URL, RUN_ID, RATE, DURATION, VUS, MAX_VUS, PAYLOAD_BYTES, PG_WRITE_SHARE,
// STREAM_SHARE (cache reads get the rest), CACHE_KEYS, P95_MS / MAX_ERROR_RATE (thresholds).
// Per-operation Trends (`op_pg_write_duration`, `op_stream_publish_duration`,
// `op_cache_read_duration`) and Counters (`op_*_total`) land in the summary, and per window
// (WINDOW_S, k6/lib/windows.js; set WINDOW_OPS=pg_write,stream_publish,cache_read) so a verdict
// can compare each adapter's latency in the first and the last windows.
import { check } from "k6";
import { Counter, Trend } from "k6/metrics";
import { config, envFloat, envInt, thresholds } from "./lib/config.js";
import { randomBase64, randomHex } from "./lib/payload.js";
import { recordWindow } from "./lib/windows.js";
import { setupTokens, token, withToken } from "./lib/auth.js";
import { adoptOwnConversation, setupConversations, vuConversation } from "./lib/conversations.js";
import * as platform from "./lib/platform.js";

export const options = {
  scenarios: {
    adapters: {
      executor: "constant-arrival-rate",
      rate: config.rate,
      timeUnit: "1s",
      duration: config.duration,
      preAllocatedVUs: config.vus,
      maxVUs: config.maxVus,
    },
  },
  thresholds: thresholds(),
  discardResponseBodies: true,
};

const pgShare = envFloat("PG_WRITE_SHARE", 0.4);
const streamShare = envFloat("STREAM_SHARE", 0.3);
const cacheKeys = envInt("CACHE_KEYS", 20);
// fixed per run (from RUN_ID), so every VU reads the same small set of conversations
const keys = Array.from({ length: cacheKeys }, (_, i) => {
  let h = 0;
  for (const ch of `${config.runId}:${i}`) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  const hex = h.toString(16).padStart(8, "0");
  return `${hex}-0000-4000-8000-${String(i).padStart(12, "0")}`;
});

const ops = {};
for (const name of ["pg_write", "stream_publish", "cache_read"]) {
  ops[name] = { trend: new Trend(`op_${name}_duration`, true), count: new Counter(`op_${name}_total`) };
}
const accepted = new Counter("messages_accepted");

// Only participants may post: setup() creates one conversation per logged-in user.
export function setup() {
  const tokens = setupTokens();
  return { tokens, conversations: setupConversations(tokens) };
}

// Operation `where` of the platform file (send, endpoints.*), tagged `name`.
function send(tokens, where, values, name) {
  return withToken(tokens, where, (t) => platform.request(where, values, t, { tags: { name } }));
}

function pgWrite(data) {
  const write = () =>
    send(
      data.tokens,
      "send",
      {
        conversation_id: vuConversation(data),
        client_msg_id: `${config.runId}:${__VU}-${__ITER}-${randomHex(4)}`,
        txn_id: `${config.runId}-${__VU}-${__ITER}-${randomHex(4)}`.replace(/[^A-Za-z0-9._-]/g, "_"),
        ciphertext: randomBase64(config.payloadBytes),
      },
      "pg_write",
    );
  let res = write();
  if (platform.outcome("send", res.status) === "forbidden" && adoptOwnConversation(token(data.tokens))) {
    res = write();
  }
  if (platform.isOk("send", res)) accepted.add(1);
  return [res, "send"];
}

function streamPublish(tokens) {
  const values = { kind: "soak", run: config.runId, n: `${__VU}-${__ITER}` };
  return [send(tokens, "endpoints.storage_event", values, "stream_publish"), "endpoints.storage_event"];
}

function cacheRead(tokens) {
  const key = keys[Math.floor(Math.random() * keys.length)];
  return [send(tokens, "endpoints.storage_summary", { key }, "cache_read"), "endpoints.storage_summary"];
}

export default function (data) {
  const draw = Math.random();
  const name = draw < pgShare ? "pg_write" : draw < pgShare + streamShare ? "stream_publish" : "cache_read";
  const run = { pg_write: () => pgWrite(data), stream_publish: () => streamPublish(data.tokens), cache_read: () => cacheRead(data.tokens) };
  const [res, where] = run[name]();
  ops[name].trend.add(res.timings.duration);
  ops[name].count.add(1);
  recordWindow(res, name);
  check(res, { [`${name} answered ${platform.statuses(where, "ok").join("/")}`]: (r) => platform.isOk(where, r) });
}
