// WebSocket fan-out load: CONNECTIONS sockets on the gateway (scenario "sockets") while messages
// are posted into one conversation at RATE per second (scenario "posts"); every socket receives
// every message, so the gateway pushes CONNECTIONS x RATE frames per second. Each frame's end-to-
// end latency (API accepted -> frame received by this VU, same host clock) goes into the
// ws_e2e_latency trend; ws_frames counts frames, ws_closed_early sockets the server closed.
//
// Env: PLAN_FILE (JSON {"gateway": "ws://.../v1/ws", "api": "http://...", "conversation": id,
// "poster": token, "tokens": [token, ...]}: tokens of the conversation's members; a secret file
// written by benchmarks/gateway_bench.py, never put on a command line), CONNECTIONS, RATE,
// DURATION (posting seconds), WARMUP_S (seconds sockets get to connect before posting), RUN_ID,
// PAYLOAD_BYTES.
import { WebSocket } from "k6/experimental/websockets";
import http from "k6/http";
import { Counter, Trend } from "k6/metrics";
import { envInt, envStr } from "./lib/config.js";
import { randomBase64, randomHex } from "./lib/payload.js";

const plan = JSON.parse(open(__ENV.PLAN_FILE));
const connections = envInt("CONNECTIONS", 100);
const rate = envInt("RATE", 10);
const duration = envInt("DURATION", 10);
const warmup = envInt("WARMUP_S", 5);
const payloadBytes = envInt("PAYLOAD_BYTES", 1024);
const runId = envStr("RUN_ID", `bench-${Date.now()}`);
const holdMs = (warmup + duration + 5) * 1000;

export const options = {
  scenarios: {
    sockets: {
      executor: "per-vu-iterations",
      vus: connections,
      iterations: 1,
      maxDuration: `${warmup + duration + 30}s`,
      exec: "socket",
    },
    posts: {
      executor: "constant-arrival-rate",
      rate: rate,
      timeUnit: "1s",
      duration: `${duration}s`,
      startTime: `${warmup}s`,
      preAllocatedVUs: Math.max(2, Math.ceil(rate / 20)),
      maxVUs: Math.max(10, Math.ceil(rate / 5)),
      exec: "post",
    },
  },
  discardResponseBodies: true,
};

const latency = new Trend("ws_e2e_latency", true);
const frames = new Counter("ws_frames");
const closedEarly = new Counter("ws_closed_early");
const accepted = new Counter("messages_accepted");

export function socket() {
  const token = plan.tokens[(__VU - 1) % plan.tokens.length];
  const ws = new WebSocket(plan.gateway, null, { headers: { Authorization: `Bearer ${token}` } });
  let done = false;
  ws.onmessage = (event) => {
    const doc = JSON.parse(event.data);
    if (doc.type !== "message") return;
    frames.add(1);
    latency.add(Date.now() - doc.accepted_at * 1000);
  };
  ws.onopen = () => {
    setTimeout(() => {
      done = true;
      ws.close();
    }, holdMs);
  };
  ws.onclose = () => {
    if (!done) closedEarly.add(1);
  };
}

export function post() {
  const res = http.post(
    `${plan.api}/v1/messages`,
    JSON.stringify({
      conversation_id: plan.conversation,
      client_msg_id: `${runId}:${__VU}-${__ITER}-${randomHex(4)}`,
      ciphertext: randomBase64(payloadBytes),
    }),
    { headers: { "Content-Type": "application/json", Authorization: `Bearer ${plan.poster}` } },
  );
  if (res.status === 202) accepted.add(1);
}
