// Login helpers: get tokens the way the platform file says (lib/platform.js: login.request, the
// token's JSONPath, how it is sent) and keep using them, logging in again when the platform
// answers "unauthorized" (reference: tokens vanish when Redis restarts empty).
//
// Env: LOGIN_PREFIX / LOGIN_USERS (users named by login.username, e.g. <prefix>-0 ..
// <prefix>-<users-1>, as seeded by `python -m msgstack seed-users`), LOGIN_SESSIONS (how many of
// them setup() logs in, default min(LOGIN_USERS, 10)), TOKEN (use this token, log in never).
// The password comes from LOGIN_PASSWORD in k6's *process* environment (start_load sets it
// there, never as `-e` on the command line) and is never logged or put in a tag.
import { Counter } from "k6/metrics";
import { envInt, envStr } from "./config.js";
import * as platform from "./platform.js";

const users = envInt("LOGIN_USERS", 1);

export const authConfig = {
  prefix: envStr("LOGIN_PREFIX", "loadtest"),
  users: users,
  sessions: Math.max(1, Math.min(users, envInt("LOGIN_SESSIONS", 10))),
  token: envStr("TOKEN", ""),
};

const relogins = new Counter("auth_relogins");

// The n-th load-test user (wraps around the seeded ones).
export function username(n) {
  return platform.username(authConfig.prefix, n % authConfig.users);
}

function password() {
  const value = __ENV.LOGIN_PASSWORD;
  if (!value) throw new Error("LOGIN_PASSWORD is not set in k6's environment");
  return value;
}

// One login request; returns the k6 response (a success carries the token).
export function loginRequest(user, pass, tags) {
  const n = parseInt(String(user).split("-").pop(), 10);
  return platform.loginRequest(user, pass === undefined ? password() : pass, Number.isNaN(n) ? 0 : n, {
    tags: Object.assign({ name: "login" }, tags || {}),
  });
}

// The token of a successful login, or null (the status tells why).
export function login(user, pass) {
  const s = platform.session(loginRequest(user, pass));
  return s ? s.token : null;
}

// For setup(): log `count` users in (default LOGIN_SESSIONS), as [{token, userId}] (userId: by
// login.user_id, null when the platform file gives none); throws if any login fails, so a load
// never starts with no way to authenticate. With TOKEN set, returns [{token: TOKEN, userId: null}].
export function setupSessions(count) {
  if (authConfig.token) return [{ token: authConfig.token, userId: null }];
  const n = count || authConfig.sessions;
  const sessions = [];
  for (let i = 0; i < n; i++) {
    const res = loginRequest(username(i));
    const s = platform.session(res);
    if (!s) {
      throw new Error(`login as ${username(i)} on ${platform.platform.name} failed: HTTP ${res.status}`);
    }
    sessions.push(s);
  }
  return sessions;
}

// setupSessions' tokens only.
export function setupTokens(count) {
  return setupSessions(count).map((s) => s.token);
}

// This VU's token: one of setup()'s at first, its own after a re-login.
let vuToken = null;

export function token(tokens) {
  if (vuToken === null) vuToken = tokens[(__VU - 1) % tokens.length];
  return vuToken;
}

// Log in again as this VU's user (true when a fresh token replaced the old one).
function relogin() {
  if (authConfig.token) return false;
  const fresh = login(username(__VU - 1));
  if (!fresh) return false;
  relogins.add(1);
  vuToken = fresh;
  return true;
}

// Send `request(token)` (a platform.request of operation `where`); when the platform answers
// "unauthorized", log in again once (as this VU's user) and retry. During an auth outage the
// re-login fails and the first answer is returned as is.
export function withToken(tokens, where, request) {
  let res = request(token(tokens));
  if (platform.outcome(where, res.status) === "unauthorized" && relogin()) res = request(token(tokens));
  return res;
}
