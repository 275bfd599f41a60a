// Conversation CRUD stress (plan test 2): a constant arrival rate of mixed operations, by default
// 40 % create, 30 % list, 20 % update, 10 % delete, plus deliberate unauthorized reads and
// deliberately stale updates. Every call is an operation of the platform file (lib/platform.js):
// conversations.create / list / get / update / delete, their statuses (ok, forbidden, conflict)
// and their extraction paths.
//
// Env (set by chaosmessaging.actions.load.start_load): PLATFORM_FILE, RATE (operations/s),
// DURATION, VUS / MAX_VUS, MIX ("create,list,update,delete" weights, default "40,30,20,10"),
// HOT (conversations each user creates in setup() and keeps updating, default 5),
// INTRUDE_EVERY (every N-th iteration also reads another user's conversation, default 10),
// STALE_EVERY (every N-th update sends a version known to be stale, default 5), LIST_LIMIT (page
// size asked of a list when its page has a limit_param, default 20), and thresholds:
// P95_CACHED_MS / P95_MISS_MS (latency of requests the participant cache answered / missed, by
// the service's cache_header), MAX_ERROR_RATE (unexpected answers). Users: as lib/auth.js
// (LOGIN_SESSIONS users, at least 2: each one is the intruder of the next).
//
// What the platform file may lack, and what then happens (one "NOT_MEASURED <what>: <why>" line
// in the log from setup()):
// - conversations.list / update / delete: that operation leaves the mix;
// - conversations.get with a forbidden status: no unauthorized read (their verdict is n/a);
// - conversations.update.concurrency (optimistic concurrency): updates carry no version, none is
//   stale (the version-conflict verdict is n/a: without concurrency the update has no conflict);
// - a cache_header on the conversations' service while P95_CACHED_MS / P95_MISS_MS ask for the
//   cache latencies: the counter cache_latency_not_measured gets 1 and its threshold (count==0)
//   fails the run's thresholds: a latency limit that cannot be measured is never passed.
//
// Counted: authz_attempts / authz_denied (forbidden, correct) / authz_leaks (ok: a leak, which
// fails the run) / authz_other_answers (neither, e.g. 503 under overload), stale_updates /
// version_conflicts (conflict) / stale_accepted (a stale version answered ok: broken optimistic
// concurrency), list_leaks (a listed conversation of this run created by someone else),
// unexpected_responses (rate), cached_duration / miss_duration (trends, ms).
import http from "k6/http";
import { Counter, Rate, Trend } from "k6/metrics";
import { config, envFloat, envInt, envStr } from "./lib/config.js";
import { authConfig, setupSessions } from "./lib/auth.js";
import * as platform from "./lib/platform.js";

const CREATE = "conversations.create";
const LIST = "conversations.list";
const GET = "conversations.get";
const UPDATE = "conversations.update";
const DELETE = "conversations.delete";

const weights = envStr("MIX", "40,30,20,10").split(",").map((w) => parseFloat(w));
if (weights.length !== 4 || weights.some((w) => Number.isNaN(w) || w < 0)) {
  throw new Error(`MIX must be four weights "create,list,update,delete", got "${__ENV.MIX}"`);
}
const HOT = envInt("HOT", 5);
const INTRUDE_EVERY = envInt("INTRUDE_EVERY", 10);
const STALE_EVERY = envInt("STALE_EVERY", 5);
const LIST_LIMIT = envInt("LIST_LIMIT", 20);
const P95_CACHED_MS = envFloat("P95_CACHED_MS", null);
const P95_MISS_MS = envFloat("P95_MISS_MS", null);

// What the platform file describes, and why a part is skipped when it does not.
const name = platform.platform.name;
const concurrency = platform.has(UPDATE) ? platform.operation(UPDATE).concurrency : null;
const can = {
  list: platform.has(LIST),
  update: platform.has(UPDATE),
  delete: platform.has(DELETE),
  intrude: platform.has(GET) && platform.statuses(GET, "forbidden").length > 0,
  stale: !!concurrency,
  cache: [CREATE, LIST, GET, UPDATE, DELETE].some((w) => platform.has(w) && platform.serviceOf(w).cache_header),
};
const skipped = [];
for (const [op, where] of [["list", LIST], ["update", UPDATE], ["delete", DELETE]]) {
  if (!can[op]) skipped.push([`${op} operations`, `the platform file of '${name}' describes no ${where}`]);
}
if (!can.intrude) {
  skipped.push(["unauthorized reads", `${GET} is not described or has no forbidden status`]);
}
if (can.update && !can.stale) {
  skipped.push(["stale updates", `${UPDATE} has no concurrency (optimistic concurrency with a version)`]);
}
const cacheLimits = P95_CACHED_MS !== null || P95_MISS_MS !== null;
if (cacheLimits && !can.cache) {
  skipped.push([
    "cached/miss latency",
    `no service of the conversations operations has a cache_header, yet P95_CACHED_MS / P95_MISS_MS ask for it`,
  ]);
}
const mix = [true, can.list, can.update, can.delete].map((present, i) => (present ? weights[i] : 0));

function stressThresholds() {
  const out = {
    authz_leaks: ["count==0"],
    list_leaks: ["count==0"],
    stale_accepted: ["count==0"],
  };
  if (can.intrude) out.authz_denied = ["count>0"];
  if (can.stale) out.version_conflicts = ["count>0"];
  if (P95_CACHED_MS !== null) out.cached_duration = [`p(95)<${P95_CACHED_MS}`];
  if (P95_MISS_MS !== null) out.miss_duration = [`p(95)<${P95_MISS_MS}`];
  if (cacheLimits && !can.cache) out.cache_latency_not_measured = ["count==0"];
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
  setupTimeout: "120s",
};
// forbidden and conflict answers are provoked on purpose; unexpected ones are counted apart
http.setResponseCallback(
  http.expectedStatuses(
    ...platform.statusesOf([CREATE, LIST, GET, UPDATE, DELETE], ["ok"]),
    ...platform.statusesOf([GET], ["forbidden"]),
    ...platform.statusesOf([UPDATE], ["conflict"]),
  ),
);

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
const cacheNotMeasured = new Counter("cache_latency_not_measured");

function tags(tag) {
  return { tags: { name: tag } };
}

// The version a reply of `where` gives (extract.version), or null.
function versionOf(where, res) {
  const path = (platform.operation(where).extract || {}).version;
  return path ? platform.read(res, path) : null;
}

export function setup() {
  for (const [what, why] of skipped) console.warn(`NOT_MEASURED ${what}: ${why}`);
  if (cacheLimits && !can.cache) cacheNotMeasured.add(1);
  const sessions = setupSessions(Math.max(2, authConfig.sessions));
  const users = sessions.map((s, i) => {
    const hot = [];
    for (let n = 0; n < HOT; n++) {
      const title = `${config.runId} hot ${i}.${n}`;
      const res = platform.request(CREATE, { title: title, participants: [] }, s.token, tags("setup"));
      if (!platform.isOk(CREATE, res)) {
        throw new Error(`setup: creating a conversation on ${name} failed: HTTP ${res.status} ${res.body}`);
      }
      const id = platform.extract(CREATE, res, "id");
      let version = null;
      if (can.stale) {
        version = versionOf(CREATE, res);
        if (version === null && platform.has(GET)) {
          version = versionOf(GET, platform.request(GET, { conversation_id: id }, s.token, tags("setup")));
        }
        if (version === null) throw new Error(`setup: neither ${CREATE} nor ${GET} gave the version of ${id}`);
      }
      hot.push({ id: id, title: title, version: version });
    }
    return { token: s.token, id: s.userId, index: i, hot: hot };
  });
  return { users };
}

function expect(where, res, kinds) {
  const good = kinds.indexOf(platform.outcome(where, res.status)) >= 0;
  unexpected.add(!good, { status: String(res.status) });
  const cache = platform.cacheAnswer(where, res);
  if (cache === "hit") cachedDuration.add(res.timings.duration);
  else if (cache === "miss") missDuration.add(res.timings.duration);
  return good;
}

function pick() {
  const total = mix.reduce((a, b) => a + b, 0);
  if (total <= 0) return 0;
  let r = Math.random() * total;
  for (let i = 0; i < mix.length; i++) {
    if (r < mix[i]) return i;
    r -= mix[i];
  }
  return mix.length - 1;
}

// VU-local knowledge: the version last seen of each hot conversation and the one it replaced (a
// version known to be stale), conversations it created.
const versions = {};
const previous = {};
const created = [];

function me(data) {
  return data.users[(__VU - 1) % data.users.length];
}

function learn(id, version) {
  if (version === null || version === undefined || version === versions[id]) return;
  if (versions[id] !== undefined) previous[id] = versions[id];
  versions[id] = version;
}

function create(user) {
  const res = platform.request(CREATE, { title: `${config.runId} c ${__VU}.${__ITER}`, participants: [] }, user.token,
    tags("create"));
  if (expect(CREATE, res, ["ok"])) created.push(platform.extract(CREATE, res, "id"));
}

// Another user's conversation of this run: one of their hot ones (always known), or, when the
// page's items give title and creator, any titled with this run's id and created by someone else.
function foreignIds(data, user) {
  const out = {};
  for (const other of data.users) if (other.index !== user.index) for (const h of other.hot) out[String(h.id)] = true;
  return out;
}

function list(data, user) {
  const page = platform.operation(LIST).page;
  const params = tags("list");
  if (page.limit_param) params.query = { [page.limit_param]: LIST_LIMIT };
  const res = platform.request(LIST, {}, user.token, params);
  if (!expect(LIST, res, ["ok"])) return;
  // only the creator participates in this run's conversations (titled with the run id): another
  // user's conversation of this run in the list is a leak. Conversations of other runs on a shared
  // platform may legitimately list this user as a participant, so they are not judged here.
  const mine = `${config.runId} `;
  const others = foreignIds(data, user);
  const byFields = page.title && page.creator && user.id !== null;
  const foreign = platform.items(LIST, res).filter((item) => {
    if (others[String(platform.pick(item, page.id))]) return true;
    if (!byFields) return false;
    const creator = platform.pick(item, page.creator);
    return creator !== null && String(creator) !== String(user.id) &&
      String(platform.pick(item, page.title) || "").startsWith(mine);
  });
  if (foreign.length > 0) {
    listLeaks.add(foreign.length);
    console.warn(`LIST_LEAK user=${user.id} saw ${foreign.map((c) => platform.pick(c, page.id)).join(",")}`);
  }
}

function update(user) {
  const hot = user.hot[Math.floor(Math.random() * user.hot.length)];
  const values = { conversation_id: hot.id, title: hot.title };
  let stale = false;
  if (can.stale) {
    if (versions[hot.id] === undefined) versions[hot.id] = hot.version;
    stale = STALE_EVERY > 0 && __ITER % STALE_EVERY === 0 && previous[hot.id] !== undefined;
    values.version = stale ? previous[hot.id] : versions[hot.id];
  }
  const res = platform.request(UPDATE, values, user.token, tags("update"));
  if (stale) staleUpdates.add(1);
  const outcome = platform.outcome(UPDATE, res.status);
  if (outcome === "ok") {
    if (stale) {
      staleAccepted.add(1);
      console.warn(`STALE_ACCEPTED conversation=${hot.id} version=${values.version}`);
    }
    if (can.stale) learn(hot.id, versionOf(UPDATE, res));
  } else if (outcome === "conflict") {
    conflicts.add(1); // concurrent VUs of the same user make honest updates stale too
    if (can.stale) learn(hot.id, currentVersion(user, hot, res));
  }
  expect(UPDATE, res, ["ok", "conflict"]);
}

// After a conflict: the current version, from the conflict reply (concurrency.current_version)
// or by reading the conversation again.
function currentVersion(user, hot, res) {
  if (concurrency.current_version) return platform.read(res, concurrency.current_version);
  if (!platform.has(GET)) return null;
  const again = platform.request(GET, { conversation_id: hot.id }, user.token, tags("reread"));
  return platform.isOk(GET, again) ? versionOf(GET, again) : null;
}

function remove(user) {
  if (created.length === 0) create(user);
  const id = created.pop();
  if (id === undefined) return;
  const res = platform.request(DELETE, { conversation_id: id }, user.token, tags("delete"));
  expect(DELETE, res, ["ok"]);
}

function intrude(data) {
  const intruder = me(data);
  const victim = data.users[__VU % data.users.length];
  if (victim.index === intruder.index) return;
  const id = victim.hot[__ITER % victim.hot.length].id;
  const res = platform.request(GET, { conversation_id: id }, intruder.token, tags("intrude"));
  authzAttempts.add(1);
  const outcome = platform.outcome(GET, res.status);
  if (outcome === "forbidden") authzDenied.add(1);
  else if (outcome !== "ok") authzOther.add(1, { status: String(res.status) });
  else {
    authzLeaks.add(1);
    console.warn(`AUTHZ_LEAK user=${intruder.id} read conversation=${id} of user=${victim.id}`);
  }
  expect(GET, res, ["forbidden"]);
}

export default function (data) {
  const user = me(data);
  const op = pick();
  if (op === 0) create(user);
  else if (op === 1) list(data, user);
  else if (op === 2) update(user);
  else remove(user);
  if (can.intrude && INTRUDE_EVERY > 0 && __ITER % INTRUDE_EVERY === 0) intrude(data);
}
