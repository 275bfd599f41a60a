// Per-window latency and failure metrics, so verdicts can compare moments of one run (baseline
// before a fault, during it, after it) from the --summary-export file alone.
//
// Env: WINDOW_S (window length in seconds, default 5) and DURATION (the load's duration, which
// bounds how many windows are declared). Window i covers [i*WINDOW_S, (i+1)*WINDOW_S) seconds
// after the scenario started; its metrics are `window_<i>_duration` (Trend, ms) and
// `window_<i>_failed` (Rate of responses outside 200..399, like k6's http_req_failed). The wall
// clock of the scenario's start goes to the Gauge `window_start_ms` (epoch milliseconds), so a
// probe can map the times a fault began and ended onto windows. Pass an operation name to
// recordWindow to also fill `window_<i>_<name>_duration` (declare the names in WINDOW_OPS,
// comma-separated), for per-operation latency over time.
import exec from "k6/execution";
import { Gauge, Rate, Trend } from "k6/metrics";
import { config, envInt } from "./config.js";

function seconds(duration) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(duration).trim());
  if (!m) return 3600;
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] || "s"];
  return parseFloat(m[1]) * unit;
}

export const windowS = envInt("WINDOW_S", 5);
// the last window absorbs a scenario that overruns its duration (graceful stop)
const count = Math.ceil(seconds(config.duration) / windowS) + 1;
const durations = [];
const failures = [];
for (let i = 0; i < count; i++) {
  durations.push(new Trend(`window_${i}_duration`, true));
  failures.push(new Rate(`window_${i}_failed`));
}
const ops = {};
for (const name of (__ENV.WINDOW_OPS || "").split(",").filter((n) => n)) {
  ops[name] = [];
  for (let i = 0; i < count; i++) ops[name].push(new Trend(`window_${i}_${name}_duration`, true));
}
const startGauge = new Gauge("window_start_ms");

// Record one response in the window it ended in.
export function recordWindow(res, op) {
  const start = exec.scenario.startTime;
  startGauge.add(start);
  const i = Math.min(count - 1, Math.max(0, Math.floor((Date.now() - start) / 1000 / windowS)));
  durations[i].add(res.timings.duration);
  failures[i].add(res.status < 200 || res.status >= 400);
  if (op && ops[op]) ops[op][i].add(res.timings.duration);
}
