// Conversation CRUD stress (plan test 2): a constant arrival rate of mixed operations, by default
// 40 % create, 30 % list, 20 % update, 10 % delete, plus deliberate unauthorized reads and
// deliberately stale updates.
//
// Env (set by chaosmessaging.actions.load.start_load): API_URL, AUTH_URL, RATE (operations/s),
// DURATION, VUS / MAX_VUS, MIX ("create,list,update,delete" weights, default "40,30,20,10"),
// HOT (conversations each user creates in setup() and keeps updating, default 5),
// INTRUDE_EVERY (every N-th iteration also reads another user's conversation, default 10),
// STALE_EVERY (every N-th update sends a version known to be stale, default 5), and thresholds:
// P95_CACHED_MS / P95_MISS_MS (latency of requests the participant cache answered / missed,
// from the API's X-Participant-Cache header), MAX_ERROR_RATE (unexpected answers). Users: as
// lib/auth.js (LOGIN_SESSIONS users, at least 2: each one is the intruder of the next).
//
// Counted: authz_attempts / authz_denied (403, correct) / authz_leaks (a 200: a leak, which fails
// the run) / authz_other_answers (neither, e.g. 503 under overload), stale_updates /
// version_conflicts (409) / stale_accepted (a stale version that got 200: broken optimistic
// concurrency), list_leaks (a listed conversation created by someone else),
// unexpected_responses (rate), cached_duration / miss_duration (trends, ms).
import http from "k6/http";
import { Counter, Rate, Trend } from "k6/metrics";
import { config, envFloat, envInt, envStr } from "./lib/config.js";
import { authConfig, setupTokens } from "./lib/auth.js";
import { request } from "./lib/conversations.js";

const weights = envStr("MIX", "40,30,20,10").split(",").map((w) => parseFloat(w));
if (weights.length !== 4 || weights.some((w) => Number.isNaN(w) || w < 0)) {
  throw new Error(`MIX must be four weights "create,list,update,delete", got "${__ENV.MIX}"`);
}
const HOT = envInt("HOT", 5);
const INTRUDE_EVERY = envInt("INTRUDE_EVERY", 10);
const STALE_EVERY = envInt("STALE_EVERY", 5);

function stressThresholds() {
  const out = {
    authz_leaks: ["count==0"],
    list_leaks: ["count==0"],
    stale_accepted: ["count==0"],
    authz_denied: ["count>0"],
    version_conflicts: ["count>0"],
  };
  const cached = envFloat("P95_CACHED_MS", null);
  if (cached !== null) out.cached_duration = [`p(95)<${cached}`];
  const miss = envFloat("P95_MISS_MS", null);
  if (miss !== null) out.miss_duration = [`p(95)<${miss}`];
  const errors = envFloat("MAX_ERROR_RATE", null);
  if (errors !== null) out.unexpected_responses = [`rate<${errors}`];
  return out;
}

export const options = {
  scenarios: {
    operations: {
      executor: "constant-arrival-rate",
      rate: config.rate,
      timeUnit: "1s",
      duration: config.duration,
      preAllocatedVUs: config.vus,
      maxVUs: config.maxVus,
    },
  },
  thresholds: stressThresholds(),
  // 403 and 409 are answers this test provokes on purpose; unexpected ones are counted apart
  setupTimeout: "120s",
};
http.setResponseCallback(http.expectedStatuses(200, 201, 204, 403, 409));

const authzAttempts = new Counter("authz_attempts");
const authzDenied = new Counter("authz_denied");
const authzLeaks = new Counter("authz_leaks");
const authzOther = new Counter("authz_other_answers");
const listLeaks = new Counter("list_leaks");
const staleUpdates = new Counter("stale_updates");
const conflicts = new Counter("version_conflicts");
const staleAccepted = new Counter("stale_accepted");
const unexpected = new Rate("unexpected_responses");
const cachedDuration = new Trend("cached_duration", true);
const missDuration = new Trend("miss_duration", true);

export function setup() {
  const tokens = setupTokens(Math.max(2, authConfig.sessions));
  const users = tokens.map((token, i) => {
    const hot = [];
    let id = null;
    for (let n = 0; n < HOT; n++) {
      const res = request("POST", "/v1/conversations", `Bearer ${token}`, { title: `${config.runId} hot ${i}.${n}` },
        { name: "setup" });
      if (res.status !== 201) throw new Error(`setup: creating a conversation failed: HTTP ${res.status} ${res.body}`);
      hot.push(res.json("id"));
      id = res.json("created_by");
    }
    return { token, id, hot };
  });
  return { users };
}

function expect(res, ok) {
  const good = ok.indexOf(res.status) >= 0;
  unexpected.add(!good, { status: String(res.status) });
  const cache = res.headers["X-Participant-Cache"];
  if (cache === "hit") cachedDuration.add(res.timings.duration);
  else if (cache === "miss") missDuration.add(res.timings.duration);
  return good;
}

function pick() {
  const total = weights.reduce((a, b) => a + b, 0);
  let r = Math.random() * total;
  for (let i = 0; i < weights.length; i++) {
    if (r < weights[i]) return i;
    r -= weights[i];
  }
  return weights.length - 1;
}

// VU-local knowledge: the version last seen of each hot conversation, conversations it created.
const versions = {};
const created = [];

function me(data) {
  return data.users[(__VU - 1) % data.users.length];
}

function create(user) {
  const res = request("POST", "/v1/conversations", `Bearer ${user.token}`,
    { title: `${config.runId} c ${__VU}.${__ITER}`, metadata: { vu: __VU } }, { name: "create" });
  if (expect(res, [201])) created.push(res.json("id"));
}

function list(user) {
  const res = request("GET", "/v1/conversations?limit=20", `Bearer ${user.token}`, undefined,
    { name: "list" });
  if (!expect(res, [200])) return;
  // only the creator participates in this run's conversations (titled with the run id): another
  // user's conversation of this run in the list is a leak. Conversations of other runs on a shared
  // platform may legitimately list this user as a participant, so they are not judged here.
  const mine = `${config.runId} `;
  const foreign = res
    .json("conversations")
    .filter((c) => c.created_by !== user.id && String(c.title || "").startsWith(mine));
  if (foreign.length > 0) {
    listLeaks.add(foreign.length);
    console.warn(`LIST_LEAK user=${user.id} saw ${foreign.map((c) => c.id).join(",")}`);
  }
}

function update(user) {
  const id = user.hot[Math.floor(Math.random() * user.hot.length)];
  const known = versions[id] || 1;
  const stale = STALE_EVERY > 0 && __ITER % STALE_EVERY === 0 && known > 1;
  const version = stale ? known - 1 : known;
  const res = request("PATCH", `/v1/conversations/${id}`, `Bearer ${user.token}`,
    { version, metadata: { vu: __VU, iter: __ITER } }, { name: "update" });
  if (stale) staleUpdates.add(1);
  if (res.status === 200) {
    if (stale) {
      staleAccepted.add(1);
      console.warn(`STALE_ACCEPTED conversation=${id} version=${version}`);
    }
    versions[id] = res.json("version");
  } else if (res.status === 409) {
    conflicts.add(1); // concurrent VUs of the same user make honest updates stale too
    versions[id] = res.json("current_version");
  }
  expect(res, [200, 409]);
}

function remove(user) {
  if (created.length === 0) create(user);
  const id = created.pop();
  if (id === undefined) return;
  const res = request("DELETE", `/v1/conversations/${id}`, `Bearer ${user.token}`, undefined,
    { name: "delete" });
  expect(res, [204]);
}

function intrude(data) {
  const intruder = me(data);
  const victim = data.users[__VU % data.users.length];
  if (victim.id === intruder.id) return;
  const id = victim.hot[__ITER % victim.hot.length];
  const res = request("GET", `/v1/conversations/${id}`, `Bearer ${intruder.token}`, undefined,
    { name: "intrude" });
  authzAttempts.add(1);
  if (res.status === 403) authzDenied.add(1);
  else if (res.status !== 200) authzOther.add(1, { status: String(res.status) });
  else {
    authzLeaks.add(1);
    console.warn(`AUTHZ_LEAK user=${intruder.id} read conversation=${id} of user=${victim.id}`);
  }
  expect(res, [403]);
}

const operations = [create, list, update, remove];

export default function (data) {
  const user = me(data);
  operations[pick()](user);
  if (INTRUDE_EVERY > 0 && __ITER % INTRUDE_EVERY === 0) intrude(data);
}
