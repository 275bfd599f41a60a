"""Run the suite: every experiment one after another, with live progress, into one folder.

For each experiment the runner starts the real `chaos run` (journal, chaos log and console output
into `<results>/<experiment>/`), watches it (`collect.Watcher`: fault windows and the stack's
metrics), prints a progress line (which experiment, its phase from the chaos log, elapsed /
expected time), then collects the run's artifacts. A night's verdict: exit 0 when every blocking
experiment passed; the plan's `continue-on-error` tests (catalog) are reported and alert, but
never fail the night.

An interrupted suite leaves no fault behind: on SIGINT/SIGTERM the runner passes SIGINT to the
running `chaos` (whose fault-safety-net control reverts and ends the run with its journal), gives
it a grace period, kills it if it hangs, then reverts whatever the fault ledger still lists. The
ledger is also reverted after every experiment, so one run's leftover never poisons the next (and
a leftover is reported as a finding: the experiment's own rollbacks should have removed it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from chaosmessaging import faults
from chaosmessaging.nightly import collect
from chaosmessaging.nightly.catalog import Entry, profile_values
from chaosmessaging.nightly.journal import criteria, verdict_of
from chaosmessaging.stack import pinning
from chaosmessaging.util import atomic_write_json, stack_home

__all__ = ["ExperimentResult", "SuiteResult", "run_suite", "default_results_dir"]

CHAOS = str(Path(sys.executable).with_name("chaos"))
#: phases worth showing, as chaoslib logs them
_PHASE = re.compile(
    r"\] (Steady state hypothesis: .*|Action: .*|Probe: .*|Let's rollback.*|Rollback: .*|"
    r"Playing your experiment's method now.*|Experiment ended .*|"
    r"Running experiment: .*|Steady state hypothesis is met!|"
    r"Steady state probe .* is not in the given tolerance.*)$"
)
#: the embedded-stack control starting (or restarting) services
_STACK = re.compile(r"\[launcher:\d+\] (.*)$")


@dataclass
class ExperimentResult:
    name: str
    plan_test: str | None
    blocking: bool
    critical: bool
    status: str = "not run"  # passed | failed | error | interrupted | not run
    exit_code: int | None = None
    journal_status: str | None = None
    deviated: bool | None = None
    started_at: float | None = None
    ended_at: float | None = None
    duration_s: float | None = None
    expected_s: float | None = None
    run_ids: list[str] = field(default_factory=list)
    criteria: list[dict] = field(default_factory=list)
    fault_windows: list[dict] = field(default_factory=list)
    leftover_faults: list[dict] = field(default_factory=list)
    reason: str = ""


@dataclass
class SuiteResult:
    night: str
    profile: str
    results_dir: str
    started_at: float
    ended_at: float | None = None
    interrupted: bool = False
    git_sha: str | None = None
    experiments: list[ExperimentResult] = field(default_factory=list)

    @property
    def blocking_failures(self) -> list[ExperimentResult]:
        return [e for e in self.experiments if e.blocking and e.status != "passed"]

    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.blocking_failures else 0

    def to_json(self) -> dict:
        data = asdict(self)
        data["exit_code"] = self.exit_code()
        data["blocking_failures"] = [e.name for e in self.blocking_failures]
        return data


def default_results_dir(root: str | Path = "reports/nightly") -> Path:
    """`<root>/<UTC date>`: one folder per night (a re-run the same night replaces its runs)."""
    return Path(root) / datetime.now(UTC).strftime("%Y-%m-%d")


def _git_sha() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except OSError:
        return None


def expected_seconds(entry: Entry, values: dict, history: dict[str, float]) -> float:
    """Last night's duration of this experiment in this profile, else a guess from its
    configuration: the longest `*_duration_s` / `*_phase_s` x3 / messages / rate, plus set-up."""
    if entry.name in history:
        return history[entry.name]
    config = {
        **entry.configuration,
        **{k: v for k, v in values.items() if k in entry.configuration},
    }
    guess = 0.0
    rates = [v for k, v in config.items() if k.endswith("_rate") and isinstance(v, int | float)]
    for key, value in config.items():
        if not isinstance(value, int | float):
            continue
        if key.endswith(("_duration_s", "_for_s", "_after_s")):
            guess = max(guess, float(value))
        elif key.endswith("_phase_s"):
            guess = max(guess, 3 * float(value))
        elif key.endswith("_messages") and rates and rates[0]:
            guess = max(guess, float(value) / float(rates[0]))
    return guess + 30.0


class _Interrupted(BaseException):
    """SIGINT/SIGTERM reached the suite (a BaseException: no `except Exception` swallows it)."""


def _previous_durations(results_dir: Path, profile: str) -> dict[str, float]:
    durations: dict[str, float] = {}
    for suite in sorted(results_dir.parent.glob("*/suite.json")):
        if suite.parent == results_dir:
            continue
        try:
            data = json.loads(suite.read_text())
        except (OSError, ValueError):
            continue
        if data.get("profile") != profile:
            continue
        for exp in data.get("experiments", []):
            if exp.get("duration_s") and exp.get("status") in ("passed", "failed"):
                durations[exp["name"]] = exp["duration_s"]
    return durations


def _stack_running(home: Path) -> bool:
    from chaosmessaging.stack.state import StackNotRunning, load_state

    try:
        return any(s.alive() for s in load_state(home).services.values())
    except StackNotRunning:
        return False


def run_suite(
    entries: list[Entry],
    profile: str = "smoke",
    results_dir: str | Path | None = None,
    home: str | Path | None = None,
    progress: Callable[[str], None] = print,
    progress_every_s: float = 10.0,
    keep_stack: bool = False,
    sample_interval_s: float = 2.0,
    timeout_factor: float = 4.0,
) -> SuiteResult:
    """Run `entries` in order with `profile`, writing everything under `results_dir`; returns
    the suite's result (also written to `<results_dir>/suite.json`)."""
    results = Path(results_dir) if results_dir else default_results_dir()
    results = results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    home = stack_home(home)
    var_file, values = profile_values(profile, Path(entries[0].path).parent if entries else None)
    suite = SuiteResult(
        night=results.name,
        profile=profile,
        results_dir=str(results),
        started_at=time.time(),
        git_sha=_git_sha(),
    )
    suite.experiments = [
        ExperimentResult(e.name, e.plan_test, e.blocking, e.critical) for e in entries
    ]
    history = _previous_durations(results, profile)
    external = bool(os.environ.get("CHAOSMESSAGING_API_URL"))
    stop_stack = not keep_stack and not external and not _stack_running(home)

    stop = {"signal": None}

    def on_signal(signum, frame):
        if stop["signal"] is None:  # the first signal stops the suite; later ones wait for it
            stop["signal"] = signum
            raise _Interrupted()
        progress("already stopping: reverting faults and collecting, please wait")

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    seeded_users = niced = False
    total = len(entries)
    try:
        if stop_stack and any(e.uses_stack for e in entries):
            seeded_users = _seed_enough_users(entries, values, progress)
            niced = _nice_the_pipeline(progress)
            _start_stack(home, progress, proxied_dependencies(entries, values))
        for index, (entry, result) in enumerate(zip(entries, suite.experiments), 1):
            result.expected_s = round(expected_seconds(entry, values, history), 1)
            _write(suite, results)
            try:
                _run_one(
                    entry,
                    result,
                    f"[{index}/{total}]",
                    var_file,
                    results / entry.name,
                    home,
                    progress,
                    progress_every_s,
                    sample_interval_s,
                    timeout_factor,
                )
            except _Interrupted:
                suite.interrupted = True
                result.status = "interrupted"
                progress(f"interrupted ({signal.Signals(stop['signal']).name}): stopping")
                break
    except _Interrupted:  # while the stack started, between two experiments
        suite.interrupted = True
        progress(f"interrupted ({signal.Signals(stop['signal']).name}): stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # whatever happened above, no fault stays behind
        for item in faults.revert_all(home):
            progress(
                f"reverted a leftover fault: {item.get('kind')} on {item.get('target')} "
                f"({item.get('status')})"
            )
        if stop_stack:
            from chaosmessaging.stack import launcher

            launcher.down(home)
            progress("embedded stack stopped (the suite started it)")
        if seeded_users:
            os.environ.pop(USERS_ENV, None)
        if niced:
            os.environ.pop(pinning.PIPELINE_NICE, None)
        suite.ended_at = time.time()
        _write(suite, results)
    return suite


# The network-fault actions: only an experiment using them needs the fault proxy on the path.
NETWORK_FAULT_MODULE = "chaosmessaging.actions.toxiproxy"
PROXY_ENV = "CHAOSMESSAGING_PROXY"  # "auto" (default) or "always"


def proxied_dependencies(entries: list[Entry], values: dict | None = None) -> tuple[str, ...]:
    """The dependencies whose traffic the suite's stack routes through the fault proxy: those
    its experiments inject network faults on.

    The proxy costs CPU on every query and command it relays (benchmarks/pipeline_bench.py), so
    the stack fronts only the dependencies named by the `proxy` argument of an experiment using
    `chaosmessaging.actions.toxiproxy` (its `${key}` resolved from the profile's `values`, else
    the experiment's own configuration), none when no experiment injects a network fault. When a
    name cannot be resolved or is not one the embedded stack fronts, every dependency is
    fronted. ``CHAOSMESSAGING_PROXY=always`` fronts every dependency regardless. An experiment
    that injects a fault through a proxy the stack did not start fails loudly (no such proxy);
    it never passes without its fault.
    """
    from chaosmessaging.stack.launcher import PROXIABLE

    if os.environ.get(PROXY_ENV, "auto").strip().lower() == "always":
        return PROXIABLE
    names: list[str] = []
    for entry in entries:
        try:
            text = Path(entry.path).read_text()
            if NETWORK_FAULT_MODULE not in text:
                continue
            doc = json.loads(text)
        except (OSError, ValueError):
            return PROXIABLE  # cannot tell: front everything
        config = {**(doc.get("configuration") or {}), **(values or {})}
        for name in _proxy_arguments(doc):
            key = name[2:-1] if name.startswith("${") and name.endswith("}") else None
            resolved = config.get(key) if key else name
            if not isinstance(resolved, str) or resolved not in PROXIABLE:
                return PROXIABLE
            names.append(resolved)
    return tuple(n for n in PROXIABLE if n in names)


def _proxy_arguments(node) -> list[str]:
    """Every `proxy` argument of an experiment's activities (anywhere in the document)."""
    found: list[str] = []
    if isinstance(node, dict):
        args = node.get("arguments")
        if isinstance(args, dict) and "proxy" in args:
            found.append(str(args["proxy"]))
        for value in node.values():
            found += _proxy_arguments(value)
    elif isinstance(node, list):
        for value in node:
            found += _proxy_arguments(value)
    return found


USERS_ENV = "CHAOSMESSAGING_LOADTEST_USERS"


def users_needed(entries: list[Entry], values: dict | None = None) -> int:
    """The most load-test users any of `entries` asks for: its largest whole-number `*_users`
    configuration value, the profile's `values` over the experiment's own (0 when none)."""
    needed = 0
    for entry in entries:
        try:
            doc = json.loads(Path(entry.path).read_text())
        except (OSError, ValueError):
            continue
        own = doc.get("configuration") or {}
        for key in (k for k in own if k.endswith("_users")):
            value = (values or {}).get(key, own[key])
            if isinstance(value, int) and not isinstance(value, bool):
                needed = max(needed, value)
    return needed


def _seed_enough_users(entries: list[Entry], values: dict, progress) -> bool:
    """Before the suite starts its own stack: when CHAOSMESSAGING_LOADTEST_USERS is not set
    and an experiment needs more load-test users than the stack seeds by default, set it (for
    the stack and every `chaos run` of the suite) to that number; True when it was set here."""
    from chaosmessaging.stack.launcher import Settings

    if os.environ.get(USERS_ENV, "").strip():
        return False
    needed, default = users_needed(entries, values), int(Settings().loadtest_users)
    if needed <= default:
        return False
    _set_env_default(USERS_ENV, needed)
    progress(f"seeding {needed} load-test users (the most an experiment of this suite asks for)")
    return True


# The niceness of the pipeline services of a stack the suite starts itself, unless
# CHAOSMESSAGING_PIPELINE_NICE says otherwise (0: none). On 2 cores at the plan's 500/s it took
# the pipeline benchmark's p95 from 53/44 ms to 48/21 ms and its dropped iterations from 120/143
# to 117/30 (docs/performance.md); the pipeline's lag stayed under 0.1 s.
SUITE_PIPELINE_NICE = 5


def _nice_the_pipeline(progress) -> bool:
    """Before the suite starts its own stack: run the dispatcher, consumer and gateway at
    SUITE_PIPELINE_NICE unless the variable is set; True when it was set here."""
    if not _set_env_default(pinning.PIPELINE_NICE, SUITE_PIPELINE_NICE):
        return False
    progress(
        f"the pipeline services run at niceness {SUITE_PIPELINE_NICE}, behind the request path "
        f"({pinning.PIPELINE_NICE}=0 to turn it off)"
    )
    return True


def _set_env_default(name: str, value: object) -> bool:
    """Set `name` to `value` in this process' environment (and so every `chaos run` of the
    suite) unless it is set already; True when it was set here (the suite unsets it at its end)."""
    if os.environ.get(name, "").strip():
        return False
    os.environ[name] = str(value)
    return True


def _start_stack(
    home: Path, progress: Callable[[str], None], fronted: tuple[str, ...] = ("redis", "postgres")
) -> None:
    """Start the embedded stack once for the whole suite, its fault proxy's API on a free port:
    the default 8474 may be taken between the check and the bind by another stack on the same
    machine (parallel CI jobs, other users), which would leave ours without a proxy. The services
    reach the `fronted` dependencies through the proxy, the others directly
    (`proxied_dependencies`)."""
    from chaosmessaging.stack import launcher, servers

    direct = [d for d in launcher.PROXIABLE if d not in fronted]
    route = ", ".join(
        [f"{' and '.join(fronted)} traffic through the fault proxy"] * bool(fronted)
        + [f"{' and '.join(direct)} direct"] * bool(direct)
    )
    if not fronted:
        route += " (no network fault in this suite)"
    progress(f"starting the embedded stack in {home}, {route}")
    try:
        launcher.up(
            home,
            with_proxy=fronted,
            proxy_port=servers.free_port(),
            progress=lambda m: progress(f"  {m}"),
        )
    except Exception as error:  # each experiment's stack control tries again and reports
        progress(f"the embedded stack did not start ({type(error).__name__}: {error})")


def _write(suite: SuiteResult, results: Path) -> None:
    atomic_write_json(results / "suite.json", suite.to_json())


def _run_one(
    entry: Entry,
    result: ExperimentResult,
    counter: str,
    var_file: Path | None,
    dest: Path,
    home: Path,
    progress: Callable[[str], None],
    progress_every_s: float,
    sample_interval_s: float,
    timeout_factor: float,
) -> None:
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    journal, chaos_log = dest / "journal.json", dest / "chaos.log"
    cmd = [CHAOS, "--log-file", str(chaos_log), "run", "--journal-path", str(journal)]
    if var_file:
        cmd += ["--var-file", str(var_file)]
    cmd.append(entry.path)
    env = {**os.environ, "CHAOSMESSAGING_HOME": str(home)}
    env.pop("CHAOSMESSAGING_RUN_ID", None)  # each experiment starts its own run
    kind = "blocking" if entry.blocking else "continue-on-error"
    progress(
        f"{counter} {entry.name} ({entry.plan_test or 'extra'}, {kind}): starting, "
        f"expected ~{result.expected_s:.0f}s"
    )
    offsets, before = collect.log_offsets(home), collect.known_runs(home)
    result.started_at = time.time()
    watcher = collect.Watcher(home, sample_interval_s)
    watcher.start()
    timeout = max(300.0, timeout_factor * (result.expected_s or 60))
    with open(dest / "output.log", "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    phase, last_report, log_pos = "starting", 0.0, 0
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            new_phase, log_pos = _phase(chaos_log, log_pos)
            elapsed = time.time() - result.started_at
            if new_phase and new_phase != phase or elapsed - last_report >= progress_every_s:
                phase = new_phase or phase
                last_report = elapsed
                progress(
                    f"{counter} {entry.name}: {phase} — {elapsed:.0f}s / ~{result.expected_s:.0f}s"
                )
            if elapsed > timeout:
                result.reason = f"timed out after {timeout:.0f}s"
                progress(f"{counter} {entry.name}: {result.reason}, stopping it")
                _stop_chaos(proc)
                break
    except _Interrupted:
        _stop_chaos(proc)
        raise
    finally:
        watcher.stop()
        result.ended_at = time.time()
        result.duration_s = round(result.ended_at - result.started_at, 1)
        result.exit_code = proc.poll()
        leftovers = faults.revert_all(home)
        result.leftover_faults = [
            {k: v for k, v in item.items() if k != "output"} for item in leftovers
        ]
        found = collect.collect(dest, home, before, offsets, watcher)
        result.run_ids = found["run_ids"]
        result.fault_windows = watcher.fault_windows()
        _judge(result, journal)
        progress(
            f"{counter} {entry.name}: {result.status.upper()} in {result.duration_s:.0f}s"
            + (f" — {result.reason}" if result.reason else "")
        )


def _judge(result: ExperimentResult, journal: Path) -> None:
    if not journal.exists():
        result.status = "interrupted" if result.status == "interrupted" else "error"
        result.reason = result.reason or "no journal was written (see output.log)"
        return
    doc = json.loads(journal.read_text())
    result.journal_status, result.deviated = doc.get("status"), doc.get("deviated")
    result.criteria = criteria(doc)
    ok, reason = verdict_of(doc, result.exit_code)
    if result.status != "interrupted":
        result.status = (
            "passed"
            if ok
            else ("failed" if doc.get("status") in ("completed", "failed") else "error")
        )
    for ending, what in (
        ("chaosmessaging_rig_failure", "rig failure (not the system)"),
        ("chaosmessaging_configuration_error", "configuration error (nothing was run)"),
    ):
        ended = doc.get(ending)
        if isinstance(ended, dict) and result.status != "interrupted":
            # never blame the system for the rig or for the experiment's own configuration
            result.status = "error"
            first = (ended.get("failures") or ended.get("errors") or [""])[0]
            reason = f"{what}: {str(first).splitlines()[0] if first else ended.get('reason')}"
    if result.leftover_faults:
        ok = False
        result.status = "failed" if result.status == "passed" else result.status
        reason = (reason + "; " if reason else "") + (
            f"{len(result.leftover_faults)} fault(s) were still recorded after the run and were "
            "reverted by the suite"
        )
    result.reason = result.reason or reason


def _phase(chaos_log: Path, pos: int) -> tuple[str | None, int]:
    """The latest phase line appended to the chaos log since byte `pos`."""
    try:
        with open(chaos_log, "rb") as f:
            f.seek(pos)
            data = f.read()
    except OSError:
        return None, pos
    phase = None
    for line in data.decode(errors="replace").splitlines():
        match = _PHASE.search(line)
        if match:
            phase = match.group(1)
        elif stack := _STACK.search(line):
            phase = f"embedded stack: {stack.group(1).strip()}"
    return phase, pos + len(data)


def _stop_chaos(proc: subprocess.Popen, grace_s: float = 90.0) -> None:
    """SIGINT to `chaos` (its safety net reverts and writes the journal), then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
