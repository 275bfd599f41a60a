// Login load (plan test 6): POST /v1/auth/login at a constant arrival rate.
//
// Env (set by chaosmessaging.actions.load.start_load): AUTH_URL, RATE (logins/s), DURATION,
// VUS / MAX_VUS, LOGIN_PREFIX / LOGIN_USERS (who logs in, round robin), P95_MS and
// MAX_ERROR_RATE (thresholds on the login requests), MAX_DROPPED_RATE (fraction of the planned
// logins k6 may fail to start for lack of VUs: the rate must really be offered);
// LOGIN_PASSWORD in the process environment.
// Custom metrics: logins_ok / logins_failed (counters), login_success (rate), server_errors
// (answers 5xx other than 503, or no answer: never acceptable, even during an outage).
import { check } from "k6";
import { Counter, Rate } from "k6/metrics";
import { config, envFloat, thresholds } from "./lib/config.js";
import { loginRequest, username } from "./lib/auth.js";
import * as platform from "./lib/platform.js";

function seconds(duration) {
  const units = { ms: 0.001, s: 1, m: 60, h: 3600 };
  let total = 0;
  for (const [, n, unit] of duration.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    total += parseFloat(n) * units[unit];
  }
  return total;
}

function loginThresholds() {
  const out = thresholds();
  const dropped = envFloat("MAX_DROPPED_RATE", null);
  if (dropped !== null) {
    const allowed = Math.floor(config.rate * seconds(config.duration) * dropped);
    out.dropped_iterations = [`count<=${allowed}`];
  }
  return out;
}

export const options = {
  scenarios: {
    logins: {
      executor: "constant-arrival-rate",
      rate: config.rate,
      timeUnit: "1s",
      duration: config.duration,
      preAllocatedVUs: config.vus,
      maxVUs: config.maxVus,
    },
  },
  thresholds: loginThresholds(),
};

const ok = new Counter("logins_ok");
const failed = new Counter("logins_failed");
const success = new Rate("login_success");
const serverErrors = new Counter("server_errors");

export default function () {
  const res = loginRequest(username(__VU * 7919 + __ITER));
  const good = platform.session(res) !== null;
  if (good) ok.add(1);
  else failed.add(1);
  success.add(good);
  if (res.status === 0 || (res.status >= 500 && res.status !== 503)) serverErrors.add(1);
  check(res, { "login succeeded (with a token)": () => good });
}
