// Delivery load: the platform's send operation (reference: POST /v1/messages) into given
// conversations, each as one of its members, so the platform delivers every message to the
// members' devices (chaosmessaging.actions.websocket). Every accepted message is logged as an
// "ACK" line (lib/platform.js recordAccepted): the client-side record delivery accounting
// checks every device against, on any platform.
//
// Env (set by start_conversation_load through start_load): API_URL, AUTH_URL, RUN_ID, RATE,
// DURATION, VUS / MAX_VUS, PAYLOAD_BYTES (default 1024), CONVERSATIONS_FILE (JSON list of
// {"id", "poster"}: the conversation and the load-test user who posts into it), P95_MS and
// MAX_ERROR_RATE (thresholds). The password comes from LOGIN_PASSWORD in k6's process environment
// (lib/auth.js). Messages go round-robin over the conversations.
// Every client_msg_id is "<RUN_ID>:<vu>-<iter>:<first 16 hex of the payload's SHA-256>", so a
// device checks the bytes it receives against what was sent (byte-exact, end to end).
import exec from "k6/execution";
import { check } from "k6";
import { sha256, randomBytes } from "k6/crypto";
import encoding from "k6/encoding";
import { Counter } from "k6/metrics";
import { config, thresholds } from "./lib/config.js";
import { loginRequest } from "./lib/auth.js";
import * as platform from "./lib/platform.js";

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
};

const accepted = new Counter("messages_accepted");
const rejected = new Counter("messages_rejected");

export function setup() {
  const tokens = {};
  for (const c of conversations) {
    if (tokens[c.poster]) continue;
    const res = loginRequest(c.poster);
    const s = platform.session(res);
    if (!s) throw new Error(`login as ${c.poster} failed: HTTP ${res.status}`);
    tokens[c.poster] = s.token;
  }
  return { tokens: tokens };
}

export default function (data) {
  const c = conversations[exec.scenario.iterationInTest % conversations.length];
  const payload = randomBytes(config.payloadBytes);
  const ciphertext = encoding.b64encode(payload, "std");
  // base64: the platform carries the bytes, so hash them; text: it carries this text as is
  const text = platform.platform.send.payload_encoding === "text";
  const digest = sha256(text ? ciphertext : payload, "hex").slice(0, 16);
  const clientMsgId = `${config.runId}:${__VU}-${__ITER}:${digest}`;
  const res = platform.sendRequest(data.tokens[c.poster], c.id, clientMsgId, ciphertext, { tags: { name: "messages" } });
  const ok = platform.isOk("send", res);
  if (ok) {
    accepted.add(1);
    platform.recordAccepted(res, c.id, clientMsgId);
  } else rejected.add(1);
  check(res, { "message accepted": () => ok });
}
