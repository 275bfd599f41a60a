// Participant cache invalidation (plan test 3): participants are added and removed at a constant
// rate while readers keep reading; every read after a removal is judged on its own.
//
// Env (set by chaosmessaging.actions.load.start_load): API_URL, AUTH_URL, RATE (participant
// changes/s: each iteration of the `changes` scenario adds then removes, i.e. two changes),
// DURATION (of the changes), READ_RATE (reads/s of the `readers` scenario), RECOVERY (how long the
// readers go on after the changes stop, k6 duration), DELAY_MS (the invalidation budget: how long
// after a removal is acknowledged a read must already be refused, default 100), VUS / MAX_VUS,
// MAX_ERROR_RATE. Users: lib/auth.js, at least 2 sessions (owners and members alternate).
//
// Every request opens its own connection (noConnectionReuse), so consecutive requests of one VU
// reach either API worker process; the API names the answering pid in X-Served-By.
// Judged per request: after `owner` removes `member` from conversation C (answer 200 at time t),
// the member's read of C started at >= t + DELAY_MS must get 403. A 200 is a stale read:
// `stale_reads` grows and the log gets one line
//   STALE_READ conversation=<C> user=<member> removed_at=<ms> read_at=<ms> removed_by_pid=<p> read_pid=<q>
// `reads_after_removal` counts the judged reads, `cross_process_reads` those answered by another
// process than the one that acknowledged the removal (proof the invalidation crossed processes),
// `member_denied` a member refused while it was a participant (should stay 0).
import http from "k6/http";
import { sleep } from "k6";
import { Counter, Rate } from "k6/metrics";
import { config, envFloat, envInt, envStr } from "./lib/config.js";
import { authConfig, loginRequest, username } from "./lib/auth.js";
import { request } from "./lib/conversations.js";

const READ_RATE = envInt("READ_RATE", 10);
const RECOVERY = envStr("RECOVERY", "30s");
const DELAY_MS = envFloat("DELAY_MS", 100);
const changeIterations = Math.max(1, Math.round(config.rate / 2));

function invalidationThresholds() {
  const out = {
    stale_reads: ["count==0"],
    member_denied: ["count==0"],
    reads_after_removal: ["count>0"],
    cross_process_reads: ["count>0"],
  };
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
http.setResponseCallback(http.expectedStatuses(200, 201, 403));

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

export function setup() {
  const users = [];
  for (let i = 0; i < Math.max(2, authConfig.sessions); i++) {
    const res = loginRequest(username(i));
    if (res.status !== 200) throw new Error(`login as ${username(i)} failed: HTTP ${res.status}`);
    users.push({ token: res.json("token"), id: res.json("user_id") });
  }
  // the readers' conversations: each owner with the next user as a steady member
  const steady = users.map((owner, i) => {
    const member = users[(i + 1) % users.length];
    const res = request("POST", "/v1/conversations", `Bearer ${owner.token}`,
      { title: `steady ${i}`, participants: [member.id] }, { name: "setup" });
    if (res.status !== 201) throw new Error(`setup: creating a conversation failed: HTTP ${res.status}`);
    return { id: res.json("id"), reader: member };
  });
  return { users, steady };
}

function expect(res, ok) {
  const good = ok.indexOf(res.status) >= 0;
  unexpected.add(!good, { status: String(res.status) });
  return good;
}

// This VU's own conversation for the changes scenario (no other VU touches it, so every judged
// read has exactly one removal to be compared with).
let mine = null;

export function changes(data) {
  const n = data.users.length;
  const owner = data.users[(2 * (__VU - 1)) % n];
  let member = data.users[(2 * (__VU - 1) + 1) % n];
  if (member.id === owner.id) member = data.users[(2 * (__VU - 1) + 2) % n];
  const auth = (u) => `Bearer ${u.token}`;
  if (mine === null) {
    const res = request("POST", "/v1/conversations", auth(owner), { title: `churn ${__VU}` },
      { name: "create" });
    if (!expect(res, [201])) return;
    mine = res.json("id");
  }
  const path = `/v1/conversations/${mine}/participants`;

  const added = request("POST", path, auth(owner), { user_id: member.id }, { name: "add" });
  if (!expect(added, [201, 200])) return;
  const during = request("GET", path, auth(member), undefined, { name: "member_read" });
  if (during.status === 403) memberDenied.add(1);
  expect(during, [200]);

  const removed = request("DELETE", `${path}/${member.id}`, auth(owner), undefined,
    { name: "remove" });
  if (!expect(removed, [200])) return;
  const removedAt = Date.now();
  const removedBy = removed.headers["X-Served-By"];

  sleep(DELAY_MS / 1000);
  const readAt = Date.now();
  const after = request("GET", path, auth(member), undefined, { name: "read_after_removal" });
  judged.add(1);
  const readBy = after.headers["X-Served-By"];
  if (readBy && removedBy && readBy !== removedBy) crossProcess.add(1);
  if (after.status === 200) {
    staleReads.add(1);
    console.warn(`STALE_READ conversation=${mine} user=${member.id} removed_at=${removedAt} ` +
      `read_at=${readAt} removed_by_pid=${removedBy} read_pid=${readBy}`);
  }
  expect(after, [403]);
}

export function readers(data) {
  const conv = data.steady[(__VU + __ITER) % data.steady.length];
  const res = request("GET", `/v1/conversations/${conv.id}/participants`,
    `Bearer ${conv.reader.token}`, undefined, { name: "steady_read" });
  expect(res, [200]);
}
