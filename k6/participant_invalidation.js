// Participant cache invalidation (plan test 3): participants are added and removed at a constant
// rate while readers keep reading; every read after a removal is judged on its own. Every call is
// an operation of the platform file (lib/platform.js): conversations.create, participants.add
// (then participants.join as the added user, where the platform has it) and participants.remove;
// a read is participants.list when it has a forbidden status (else conversations.get).
//
// Env (set by chaosmessaging.actions.load.start_load): PLATFORM_FILE, RATE (participant
// changes/s: each iteration of the `changes` scenario adds then removes, i.e. two changes),
// DURATION (of the changes), READ_RATE (reads/s of the `readers` scenario), RECOVERY (how long the
// readers go on after the changes stop, k6 duration), DELAY_MS (the invalidation budget: how long
// after a removal is acknowledged a read must already be refused, default 100), VUS / MAX_VUS,
// MAX_ERROR_RATE. Users: lib/auth.js, at least 2 sessions (owners and members alternate), whose
// ids login.user_id gives.
//
// Every request opens its own connection (noConnectionReuse), so consecutive requests of one VU
// reach any of the service's processes; the service names the answering one in its
// served_by_header (reference: X-Served-By, the API worker's pid).
// Judged per request: after `owner` removes `member` from conversation C (answered ok at time t),
// the member's read of C started at >= t + DELAY_MS must be answered forbidden. An ok is a stale
// read: `stale_reads` grows and the log gets one line
//   STALE_READ conversation=<C> user=<member> removed_at=<ms> read_at=<ms> removed_by_pid=<p> read_pid=<q>
// `reads_after_removal` counts the judged reads, `cross_process_reads` those answered by another
// process than the one that acknowledged the removal (proof the invalidation crossed processes),
// `member_denied` a member refused while it was a participant (should stay 0).
// A platform file without served_by_header: cross_process_reads cannot be counted (stays 0, its
// threshold is left out) and setup() logs "NOT_MEASURED cross_process_reads: <why>".
import http from "k6/http";
import { sleep } from "k6";
import { Counter, Rate } from "k6/metrics";
import { config, envFloat, envInt, envStr } from "./lib/config.js";
import { authConfig, setupSessions } from "./lib/auth.js";
import * as platform from "./lib/platform.js";

const CREATE = "conversations.create";
const ADD = "participants.add";
const JOIN = "participants.join";
const REMOVE = "participants.remove";

const READ_RATE = envInt("READ_RATE", 10);
const RECOVERY = envStr("RECOVERY", "30s");
const DELAY_MS = envFloat("DELAY_MS", 100);
const changeIterations = Math.max(1, Math.round(config.rate / 2));

const name = platform.platform.name;
const refuses = (where) => platform.has(where) && platform.statuses(where, "forbidden").length > 0;
// the read judged after a removal: one that refuses a non-participant
const READ = refuses("participants.list") ? "participants.list" : refuses("conversations.get") ? "conversations.get" : null;
const servedBy = READ !== null && platform.has(REMOVE) && platform.serviceOf(READ).served_by_header &&
  platform.serviceOf(REMOVE).served_by_header;

function invalidationThresholds() {
  const out = {
    stale_reads: ["count==0"],
    member_denied: ["count==0"],
    reads_after_removal: ["count>0"],
  };
  if (servedBy) out.cross_process_reads = ["count>0"];
  const errors = envFloat("MAX_ERROR_RATE", null);
  if (errors !== null) out.unexpected_responses = [`rate<${errors}`];
  return out;
}

export const options = {
  scenarios: {
    changes: {
      executor: "constant-arrival-rate",
      exec: "changes",
      rate: changeIterations,
      timeUnit: "1s",
      duration: config.duration,
      preAllocatedVUs: config.vus,
      maxVUs: config.maxVus,
    },
    readers: {
      executor: "constant-arrival-rate",
      exec: "readers",
      rate: READ_RATE,
      timeUnit: "1s",
      duration: `${seconds(config.duration) + seconds(RECOVERY)}s`,
      preAllocatedVUs: Math.max(1, Math.ceil(READ_RATE / 20)),
      maxVUs: Math.max(2, Math.ceil(READ_RATE / 5)),
    },
  },
  thresholds: invalidationThresholds(),
  noConnectionReuse: true,
  setupTimeout: "120s",
};
http.setResponseCallback(
  http.expectedStatuses(
    ...platform.statusesOf([CREATE, ADD, JOIN, REMOVE].concat(READ ? [READ] : []), ["ok"]),
    ...(READ ? platform.statusesOf([READ], ["forbidden"]) : []),
  ),
);

const staleReads = new Counter("stale_reads");
const judged = new Counter("reads_after_removal");
const crossProcess = new Counter("cross_process_reads");
const memberDenied = new Counter("member_denied");
const unexpected = new Rate("unexpected_responses");

function seconds(duration) {
  const units = { ms: 0.001, s: 1, m: 60, h: 3600 };
  let total = 0;
  for (const [, n, unit] of String(duration).matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)?/g)) {
    total += parseFloat(n) * units[unit || "s"];
  }
  return total;
}

function tags(tag) {
  return { tags: { name: tag } };
}

function expect(where, res, kinds) {
  const good = kinds.indexOf(platform.outcome(where, res.status)) >= 0;
  unexpected.add(!good, { status: String(res.status) });
  return good;
}

// Make `member` a participant of `conversationId`: participants.add as the owner, then
// participants.join as the member where the platform has it (e.g. Matrix: invite, then join).
// Returns true when every step was answered ok (each answer is judged by expect).
function addParticipant(owner, member, conversationId, tag) {
  const values = { conversation_id: conversationId, user_id: member.id };
  const added = platform.request(ADD, values, owner.token, tags(tag || "add"));
  if (!expect(ADD, added, ["ok"])) return false;
  if (!platform.has(JOIN)) return true;
  const joined = platform.request(JOIN, values, member.token, tags("join"));
  return expect(JOIN, joined, ["ok"]);
}

export function setup() {
  for (const where of [ADD, REMOVE]) {
    if (!platform.has(where)) throw new Error(`the platform file of '${name}' describes no ${where}: T3 cannot run`);
  }
  if (READ === null) {
    throw new Error(`the platform file of '${name}' has no read that refuses a non-participant ` +
      "(participants.list or conversations.get with a forbidden status): T3 cannot judge a read");
  }
  if (!servedBy) {
    console.warn(`NOT_MEASURED cross_process_reads: services.${platform.operation(READ).service} of ` +
      `'${name}' names no served_by_header (which process answered), so no read is known to cross processes`);
  }
  const sessions = setupSessions(Math.max(2, authConfig.sessions));
  if (sessions.length < 2) throw new Error("T3 needs at least 2 logged-in users (LOGIN_SESSIONS, no TOKEN)");
  const users = sessions.map((s, i) => {
    if (s.userId === null) {
      throw new Error(`login as user ${i} on '${name}' gave no user id: set login.user_id in the platform file`);
    }
    return { token: s.token, id: s.userId };
  });
  // the readers' conversations: each owner with the next user as a steady member; a create whose
  // template takes {participants} makes them participants, else they are added one by one
  const createAdds = platform.uses(CREATE, "participants");
  const steady = users.map((owner, i) => {
    const member = users[(i + 1) % users.length];
    const res = platform.request(CREATE, { title: `steady ${i}`, participants: [member.id] }, owner.token,
      tags("setup"));
    if (!platform.isOk(CREATE, res)) throw new Error(`setup: creating a conversation failed: HTTP ${res.status}`);
    const id = platform.extract(CREATE, res, "id");
    if (!createAdds && !addParticipant(owner, member, id, "setup")) {
      throw new Error(`setup: making ${member.id} a participant of ${id} failed`);
    }
    return { id: id, reader: member };
  });
  return { users, steady };
}

// This VU's own conversation for the changes scenario (no other VU touches it, so every judged
// read has exactly one removal to be compared with).
let mine = null;

export function changes(data) {
  const n = data.users.length;
  const owner = data.users[(2 * (__VU - 1)) % n];
  let member = data.users[(2 * (__VU - 1) + 1) % n];
  if (member.id === owner.id) member = data.users[(2 * (__VU - 1) + 2) % n];
  if (mine === null) {
    const res = platform.request(CREATE, { title: `churn ${__VU}`, participants: [] }, owner.token, tags("create"));
    if (!expect(CREATE, res, ["ok"])) return;
    mine = platform.extract(CREATE, res, "id");
  }
  const values = { conversation_id: mine, user_id: member.id };

  if (!addParticipant(owner, member, mine)) return;
  const during = platform.request(READ, values, member.token, tags("member_read"));
  if (platform.outcome(READ, during.status) === "forbidden") memberDenied.add(1);
  expect(READ, during, ["ok"]);

  const removed = platform.request(REMOVE, values, owner.token, tags("remove"));
  if (!expect(REMOVE, removed, ["ok"])) return;
  const removedAt = Date.now();
  const removedBy = platform.servedBy(REMOVE, removed);

  sleep(DELAY_MS / 1000);
  const readAt = Date.now();
  const after = platform.request(READ, values, member.token, tags("read_after_removal"));
  judged.add(1);
  const readBy = platform.servedBy(READ, after);
  if (readBy && removedBy && readBy !== removedBy) crossProcess.add(1);
  if (platform.isOk(READ, after)) {
    staleReads.add(1);
    console.warn(`STALE_READ conversation=${mine} user=${member.id} removed_at=${removedAt} ` +
      `read_at=${readAt} removed_by_pid=${removedBy} read_pid=${readBy}`);
  }
  expect(READ, after, ["forbidden"]);
}

export function readers(data) {
  const conv = data.steady[(__VU + __ITER) % data.steady.length];
  const res = platform.request(READ, { conversation_id: conv.id }, conv.reader.token, tags("steady_read"));
  expect(READ, res, ["ok"]);
}
