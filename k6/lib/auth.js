// Login helpers: get bearer tokens from the auth service (POST /v1/auth/login) and keep using
// them, logging in again when the API answers 401 (tokens vanish when Redis restarts empty).
//
// Env: AUTH_URL (auth service base URL), LOGIN_PREFIX / LOGIN_USERS (users <prefix>-0 ..
// <prefix>-<users-1>, as seeded by `python -m msgstack seed-users`), LOGIN_SESSIONS (how many of
// them setup() logs in, default min(LOGIN_USERS, 10)), TOKEN (use this token, log in never).
// The password comes from LOGIN_PASSWORD in k6's *process* environment (start_load sets it
// there, never as `-e` on the command line) and is never logged or put in a tag.
import http from "k6/http";
import { Counter } from "k6/metrics";
import { envInt, envStr } from "./config.js";

const users = envInt("LOGIN_USERS", 1);

export const authConfig = {
  authUrl: envStr("AUTH_URL", "http://127.0.0.1:8081").replace(/\/+$/, ""),
  prefix: envStr("LOGIN_PREFIX", "loadtest"),
  users: users,
  sessions: Math.max(1, Math.min(users, envInt("LOGIN_SESSIONS", 10))),
  token: envStr("TOKEN", ""),
};

const relogins = new Counter("auth_relogins");

// The n-th load-test user (wraps around the seeded ones).
export function username(n) {
  return `${authConfig.prefix}-${n % authConfig.users}`;
}

function password() {
  const value = __ENV.LOGIN_PASSWORD;
  if (!value) throw new Error("LOGIN_PASSWORD is not set in k6's environment");
  return value;
}

// One login request; returns the k6 response (status 200 carries the token in its JSON).
export function loginRequest(user, pass, tags) {
  const body = JSON.stringify({ username: user, password: pass === undefined ? password() : pass });
  return http.post(`${authConfig.authUrl}/v1/auth/login`, body, {
    headers: { "Content-Type": "application/json" },
    tags: Object.assign({ name: "login" }, tags || {}),
    responseType: "text",
  });
}

// The token of a successful login, or null (the status tells why).
export function login(user, pass) {
  const res = loginRequest(user, pass);
  if (res.status !== 200) return null;
  try {
    return res.json("token") || null;
  } catch (_e) {
    return null;
  }
}

// For setup(): log `count` users in (default LOGIN_SESSIONS); throws if any login fails, so a
// load never starts with no way to authenticate. With TOKEN set, returns [TOKEN].
export function setupTokens(count) {
  if (authConfig.token) return [authConfig.token];
  const n = count || authConfig.sessions;
  const tokens = [];
  for (let i = 0; i < n; i++) {
    const res = loginRequest(username(i));
    if (res.status !== 200) {
      throw new Error(`login as ${username(i)} at ${authConfig.authUrl} failed: HTTP ${res.status}`);
    }
    tokens.push(res.json("token"));
  }
  return tokens;
}

// This VU's token: one of setup()'s at first, its own after a re-login.
let vuToken = null;

export function bearer(tokens) {
  if (vuToken === null) vuToken = tokens[(__VU - 1) % tokens.length];
  return `Bearer ${vuToken}`;
}

// Send `request(authorizationHeader)`; on 401 log in again once (as this VU's user) and retry.
// During an auth outage the re-login fails and the 401 is returned as is.
export function withAuth(tokens, request) {
  let res = request(bearer(tokens));
  if (res.status === 401 && !authConfig.token) {
    const fresh = login(username(__VU - 1));
    if (fresh) {
      relogins.add(1);
      vuToken = fresh;
      res = request(bearer(tokens));
    }
  }
  return res;
}
