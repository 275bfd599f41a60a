// Load settings from the environment (`-e NAME=value`, set by chaosmessaging.actions.load),
// so the same script serves the smoke and nightly profiles. Thresholds are built only from the
// values the experiment passes: nothing is judged by a number hidden in this file.

export function envInt(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === "") return fallback;
  const value = parseInt(raw, 10);
  if (Number.isNaN(value)) throw new Error(`${name} must be an integer, got "${raw}"`);
  return value;
}

export function envFloat(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === "") return fallback;
  const value = parseFloat(raw);
  if (Number.isNaN(value)) throw new Error(`${name} must be a number, got "${raw}"`);
  return value;
}

export function envStr(name, fallback) {
  const raw = __ENV[name];
  return raw === undefined || raw === "" ? fallback : raw;
}

const rate = envInt("RATE", 10);
const vus = envInt("VUS", Math.max(1, Math.ceil(rate / 10)));

export const config = {
  apiUrl: envStr("API_URL", "http://127.0.0.1:8080").replace(/\/+$/, ""),
  runId: envStr("RUN_ID", `run-${Date.now()}`),
  rate: rate,
  duration: envStr("DURATION", "30s"),
  vus: vus,
  maxVus: Math.max(vus, envInt("MAX_VUS", vus * 4)),
  payloadBytes: envInt("PAYLOAD_BYTES", 1024),
  conversationId: envStr("CONVERSATION_ID", ""),
  token: envStr("TOKEN", ""),
};

// Thresholds from P95_MS (http_req_duration p95 in ms) and MAX_ERROR_RATE (http_req_failed
// rate, 0..1); either may be absent. A failed threshold makes k6 exit with code 99.
export function thresholds() {
  const out = {};
  const p95 = envFloat("P95_MS", null);
  if (p95 !== null) out.http_req_duration = [`p(95)<${p95}`];
  const errors = envFloat("MAX_ERROR_RATE", null);
  if (errors !== null) out.http_req_failed = [`rate<${errors}`];
  return out;
}
