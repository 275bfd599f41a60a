// Message load with per-window latency/failure metrics (plan tests 10 and 13).
//
// POST /v1/messages at a constant arrival rate, like message_load.js, and every response also
// lands in k6/lib/windows.js's window metrics so the verdicts can compare the p95 and error rate
// before, during and after a fault (pool exhaustion, an online migration).
// Authentication as in lib/auth.js (setup() logs LOGIN_SESSIONS users in through AUTH_URL, or
// TOKEN is used as is; a 401 logs in again).
// Env: API_URL, RUN_ID, RATE, DURATION, VUS, MAX_VUS, PAYLOAD_BYTES, WINDOW_S,
// P95_MS / MAX_ERROR_RATE (optional whole-run thresholds; the window verdicts are the probes'),
// MAX_SERVER_ERRORS (threshold on `server_errors`: answers that are neither a success nor a 503,
// i.e. 500s, hangs past the 30 s timeout, resets) and BREAKER_OPEN_P99_MS (threshold on
// `breaker_open_duration`: the time of 503s the API refused at once because a circuit breaker
// was open, marked by its `X-Circuit-Breaker: open` header).
import { Counter, Trend } from "k6/metrics";
import { config, envFloat, thresholds } from "./lib/config.js";
import { randomBase64, randomHex } from "./lib/payload.js";
import { recordWindow } from "./lib/windows.js";
import { setupTokens, token, withToken } from "./lib/auth.js";
import { adoptOwnConversation, setupConversations, vuConversation } from "./lib/conversations.js";
import * as platform from "./lib/platform.js";

export const options = {
  scenarios: {
    messages: {
      executor: "constant-arrival-rate",
      rate: config.rate,
      timeUnit: "1s",
      duration: config.duration,
      preAllocatedVUs: config.vus,
      maxVUs: config.maxVus,
    },
  },
  thresholds: storageThresholds(),
  discardResponseBodies: true,
};

function storageThresholds() {
  const out = thresholds();
  const serverErrors = envFloat("MAX_SERVER_ERRORS", null);
  if (serverErrors !== null) out.server_errors = [`count<=${serverErrors}`];
  const openP99 = envFloat("BREAKER_OPEN_P99_MS", null);
  if (openP99 !== null) out.breaker_open_duration = [`p(99)<${openP99}`];
  return out;
}

const serverErrors = new Counter("server_errors");
const breakerOpen = new Trend("breaker_open_duration", true);

const accepted = new Counter("messages_accepted");
const rejected = new Counter("messages_rejected");
// Only participants may post: setup() creates one conversation per logged-in user.
export function setup() {
  const tokens = setupTokens();
  return { tokens, conversations: setupConversations(tokens) };
}

function post(data) {
  const clientMsgId = `${config.runId}:${__VU}-${__ITER}-${randomHex(4)}`;
  return withToken(data.tokens, "send", (t) =>
    platform.sendRequest(t, vuConversation(data), clientMsgId, randomBase64(config.payloadBytes), {
      tags: { name: "messages" },
      timeout: "30s",
    }),
  );
}

export default function (data) {
  let res = post(data);
  if (platform.outcome("send", res.status) === "forbidden" && adoptOwnConversation(token(data.tokens))) {
    res = post(data);
  }
  if (platform.isOk("send", res)) accepted.add(1);
  else rejected.add(1);
  serverErrors.add(res.status === 0 || (res.status >= 500 && res.status !== 503) ? 1 : 0);
  if (res.status === 503 && res.headers["X-Circuit-Breaker"] === "open") {
    breakerOpen.add(res.timings.duration);
  }
  recordWindow(res);
}
