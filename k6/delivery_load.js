// Delivery load: POST /v1/messages into given conversations, each as one of its members, so the
// gateway pushes every message to the members' WebSocket devices (chaosmessaging.actions.websocket).
//
// Env (set by start_conversation_load through start_load): API_URL, AUTH_URL, RUN_ID, RATE,
// DURATION, VUS / MAX_VUS, PAYLOAD_BYTES (default 1024), CONVERSATIONS_FILE (JSON list of
// {"id", "poster"}: the conversation and the load-test user who posts into it), P95_MS and
// MAX_ERROR_RATE (thresholds). The password comes from LOGIN_PASSWORD in k6's process environment
// (lib/auth.js). Messages go round-robin over the conversations.
// Every client_msg_id is "<RUN_ID>:<vu>-<iter>:<first 16 hex of the payload's SHA-256>", so a
// device checks the bytes it receives against what was sent (byte-exact, end to end).
import http from "k6/http";
import exec from "k6/execution";
import { check } from "k6";
import { sha256, randomBytes } from "k6/crypto";
import encoding from "k6/encoding";
import { Counter } from "k6/metrics";
import { config, thresholds } from "./lib/config.js";
import { loginRequest } from "./lib/auth.js";

const conversations = JSON.parse(open(__ENV.CONVERSATIONS_FILE));
if (!conversations.length) throw new Error(`${__ENV.CONVERSATIONS_FILE} lists no conversation`);

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
  thresholds: thresholds(),
  discardResponseBodies: true,
};

const accepted = new Counter("messages_accepted");
const rejected = new Counter("messages_rejected");

export function setup() {
  const tokens = {};
  for (const c of conversations) {
    if (tokens[c.poster]) continue;
    const res = loginRequest(c.poster);
    if (res.status !== 200) throw new Error(`login as ${c.poster} failed: HTTP ${res.status}`);
    tokens[c.poster] = res.json("token");
  }
  return { tokens: tokens };
}

export default function (data) {
  const c = conversations[exec.scenario.iterationInTest % conversations.length];
  const payload = randomBytes(config.payloadBytes);
  const digest = sha256(payload, "hex").slice(0, 16);
  const body = JSON.stringify({
    conversation_id: c.id,
    client_msg_id: `${config.runId}:${__VU}-${__ITER}:${digest}`,
    ciphertext: encoding.b64encode(payload, "std"),
  });
  const res = http.post(`${config.apiUrl}/v1/messages`, body, {
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${data.tokens[c.poster]}` },
    tags: { name: "messages" },
  });
  if (res.status === 202) accepted.add(1);
  else rejected.add(1);
  check(res, { "message accepted (202)": (r) => r.status === 202 });
}
