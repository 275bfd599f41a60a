// Message load: the platform's send operation (reference: POST /v1/messages) at a constant
// arrival rate; login, conversations and send come from the platform file (lib/platform.js).
//
// Env (set by chaosmessaging.actions.load.start_load): API_URL, RUN_ID, RATE (messages/s),
// DURATION (k6 duration, e.g. "30s"), VUS / MAX_VUS (pre-allocated / maximum VUs),
// PAYLOAD_BYTES (decoded ciphertext size, default 1024), CONVERSATION_ID (post there; default:
// setup() creates one conversation per logged-in user and each VU posts into its user's),
// P95_MS and MAX_ERROR_RATE (thresholds); authentication as in lib/auth.js (setup() logs
// LOGIN_SESSIONS users in through AUTH_URL, or TOKEN is used as is; a 401 logs in again).
// Only participants may post: a VU that gets 403 (it logged in again as another user after its
// token vanished) creates a conversation of its own and posts there from then on.
// Every client_msg_id starts with "<RUN_ID>:" so accounting can select this run's messages; with
// DIGEST=1 it ends with ".<sha256 of the payload>" (probes.accounting.payloads_intact).
// server_errors counts answers that are neither success nor a 4xx nor 503, and failed requests
// (status 0): what a service must never give, even while its dependencies are down.
// Per message this script does no more than it must (it is k6's CPU, on the cores of the system
// under test): no k6 check (messages_accepted/messages_rejected count the same), the answer's
// body is not read (only its status decides), the platform's functions are looked up once.
import { Counter } from "k6/metrics";
import { config, thresholds } from "./lib/config.js";
import { randomHex, randomPayload } from "./lib/payload.js";
import { setupTokens, token, withToken } from "./lib/auth.js";
import { createConversationRequest, setupConversations } from "./lib/conversations.js";
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
  thresholds: thresholds(),
  discardResponseBodies: true,
};

const accepted = new Counter("messages_accepted");
const rejected = new Counter("messages_rejected");
const serverErrors = new Counter("server_errors");
const digest = __ENV.DIGEST === "1";
// module namespace lookups cost a property get per call in k6's interpreter: once per VU here
const { sendRequest, outcome, isOk, extract } = platform;
const SEND_PARAMS = { tags: { name: "messages" }, responseType: "none" };

export function setup() {
  const tokens = setupTokens();
  const conversations = config.conversationId ? [config.conversationId] : setupConversations(tokens);
  return { tokens, conversations };
}

// This VU's conversation: its setup user's, or its own after a 403.
let vuConversation = null;

function post(data, conversationId) {
  const payload = randomPayload(config.payloadBytes, digest);
  const suffix = digest ? `.${payload.sha256}` : "";
  const clientMsgId = `${config.runId}:${__VU}-${__ITER}-${randomHex(4)}${suffix}`;
  return withToken(data.tokens, "send", (t) =>
    sendRequest(t, conversationId, clientMsgId, payload.base64, SEND_PARAMS),
  );
}

export default function (data) {
  if (vuConversation === null) vuConversation = data.conversations[(__VU - 1) % data.conversations.length];
  let res = post(data, vuConversation);
  if (outcome("send", res.status) === "forbidden" && !config.conversationId) {
    const created = createConversationRequest(token(data.tokens), { title: `load ${config.runId} vu ${__VU}` });
    if (isOk("conversations.create", created)) {
      vuConversation = extract("conversations.create", created, "id");
      res = post(data, vuConversation);
    }
  }
  const status = res.status;
  if (isOk("send", res)) accepted.add(1);
  else if (status < 200 || status >= 300) rejected.add(1);
  if (status === 0 || (status >= 500 && status !== 503)) serverErrors.add(1);
}
