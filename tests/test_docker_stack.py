"""The reference stack in containers on a real Docker Engine, and the experiments' container kills.

The session starts its own `dockerd` (tests/support/dockerd.py: private data root and socket, no
bridge, host networking), builds the reference stack's image offline (mmdebstrap + the wheels of
this environment, `docker import`, then msgstack copied in), runs `chaosmessaging stack up
--docker` (auth, api, dispatcher, consumer, gateway as containers; Redis, PostgreSQL and the fault
proxy as local processes) and runs three experiments through the real `chaos` CLI with
`CHAOSMESSAGING_TARGET_BACKEND=docker`, so every kill is a container kill and every "no crash"
verdict compares container identities. Where dockerd cannot start, every test here skips and
says exactly why; on a root CI machine with docker.io and mmdebstrap they run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chaosmessaging import faults, runs
from chaosmessaging.backends import BackendError, backend_for
from chaosmessaging.backends.docker import DockerBackend
from chaosmessaging.stack.engine import OWNER_LABEL
from chaosmessaging.probes.process import no_crash, snapshot_identities
from chaosmessaging.stack import launcher, servers

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
from dockerd import Unavailable, start_engine, stop_engine  # noqa: E402

# a clean machine builds the image first (minutes: mmdebstrap), inside the first test's set-up
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
CHAOS = str(Path(sys.executable).with_name("chaos"))
SERVICES = ["auth", "api", "dispatcher", "consumer", "gateway"]
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def engine():
    try:
        started = start_engine()
    except Unavailable as exc:
        if os.environ.get("CI") and os.geteuid() == 0:  # root CI installs docker.io: must run
            pytest.fail(f"CI runs as root but no Docker Engine started: {exc}")
        pytest.skip(f"no Docker Engine for the container tests: {exc}")
    TIMINGS["dockerd_s"] = started.started_s
    yield started
    stop_engine(started)


@pytest.fixture(scope="module")
def docker_stack(engine):
    home = Path(f"/tmp/cm-docker-stack-{os.getpid()}")
    shutil.rmtree(home, ignore_errors=True)
    lines: list[str] = []
    began = time.monotonic()
    state = launcher.up(
        home,
        proxy_port=servers.free_port(),
        docker=True,
        docker_host=engine.host,
        progress=lines.append,
    )
    TIMINGS["stack_up_s"] = round(time.monotonic() - began, 1)
    print("\n".join(["docker stack:", *lines]))
    yield state
    launcher.down(home)
    shutil.rmtree(home, ignore_errors=True)
    print(f"docker part timings: {json.dumps(TIMINGS)}")


@pytest.fixture
def target_env(docker_stack, engine, monkeypatch):
    """The environment an operator sets to aim the experiments at the containers."""
    env = {
        "CHAOSMESSAGING_HOME": docker_stack.home,
        "CHAOSMESSAGING_TARGET_BACKEND": "docker",
        # the databases and the fault proxy stay local processes of the embedded stack
        "CHAOSMESSAGING_TARGET_BACKENDS": "postgres=process,redis=process,proxy=process",
        "CHAOSMESSAGING_DOCKER_HOST": engine.host,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(runs.ENV, raising=False)
    return env


def _chaos(experiment: Path, tmp_path: Path, env: dict, *extra: str, timeout: float = 420):
    journal = tmp_path / "journal.json"
    began = time.monotonic()
    proc = subprocess.run(
        [
            CHAOS,
            "--log-file",
            str(tmp_path / "chaos.log"),
            "run",
            "--journal-path",
            str(journal),
            *extra,
            str(experiment),
        ],
        env={k: v for k, v in {**os.environ, **env}.items() if k != runs.ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )
    TIMINGS[f"{experiment.stem}_s"] = round(time.monotonic() - began, 1)
    return proc.returncode, json.loads(journal.read_text()), proc.stdout + proc.stderr


def _why(journal: dict, output: str) -> str:
    """What a failed run says about itself, short: the activities that failed (with their
    errors) and the log's warnings and errors, each line cut (a verdict's list of lost message
    ids would otherwise fill the whole assertion message)."""
    failed = [
        f"{r['activity']['name']}: {r['status']} {''.join(r.get('exception') or [])[-400:]}"
        for r in journal.get("run", [])
        if r.get("status") != "succeeded"
    ]
    noted = [
        line[:300]
        for line in output.splitlines()
        if any(level in line for level in ("WARNING", "ERROR", "CRITICAL"))
    ]
    return "\n".join(["failed activities:", *failed, "warnings and errors:", *noted[-30:]])


def _after(journal: dict) -> dict:
    return {p["activity"]["name"]: p for p in journal["steady_states"]["after"]["probes"]}


def _method(journal: dict) -> dict:
    return {r["activity"]["name"]: r for r in journal["run"]}


def test_every_service_runs_in_a_container_we_own(docker_stack, engine, target_env):
    backend = backend_for("consumer")
    assert isinstance(backend, DockerBackend)
    for service in SERVICES:
        [container] = backend.containers(service)
        assert container.status == "running"
        assert container.labels[OWNER_LABEL] == docker_stack.home
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert backend.ready(service)
    # the databases stay processes of the embedded stack
    assert backend_for("postgres").name == "process"


def test_a_container_kill_changes_its_identity_and_start_waits_until_ready(
    docker_stack, target_env
):
    backend = backend_for("consumer")
    runs.new_run(home=docker_stack.home)
    snapshot_identities(label="kill", services=["consumer", "api"])
    runs.record("mark:method", time.time(), home=docker_stack.home)
    [before] = backend.instances("consumer")
    killed = backend.kill("consumer", "SIGKILL")
    assert [i.key for i in killed] == [before.key]
    [down] = backend.instances("consumer")
    assert not down.alive and down.instance == before.instance
    [after] = backend.start("consumer", timeout=60)
    assert backend.ready("consumer")  # start returned only once /readyz answered 200
    assert after.alive and after.instance == before.instance and after.key != before.key
    verdict = no_crash(since="kill")
    assert not verdict["ok"] and verdict["changed"] == ["consumer"]
    assert verdict["services"]["api"]["same"] is True
    assert faults.active(docker_stack.home) == []


def test_a_kill_while_start_waits_for_readiness_ends_the_wait_at_once(docker_stack, target_env):
    # the kill engines arm their trigger before they start the service, so a kill can land while
    # `start` still waits for /readyz: the wait must end then (it once ran to its 60 s timeout,
    # leaving the consumer down a minute per such kill while the load's backlog grew)
    backend = backend_for("consumer")
    backend.kill("consumer", "SIGKILL")
    killed: list = []

    def kill_once_running() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not killed:
            if any(i.alive for i in backend.instances("consumer")):
                killed.extend(backend.kill("consumer", "SIGKILL"))
            time.sleep(0.01)

    killer = threading.Thread(target=kill_once_running)
    killer.start()
    began = time.monotonic()
    try:
        with pytest.raises(BackendError, match=r"consumer exited while starting .*exit code 137"):
            backend.start("consumer", timeout=60)
    finally:
        killer.join()
    assert killed, "the container never ran, so nothing was killed during the start"
    assert time.monotonic() - began < 20
    [after] = backend.start("consumer", timeout=60)  # and a start without a kill still works
    assert after.alive and backend.ready("consumer")


def _kills_record(journal: dict) -> dict:
    """The random kills of a consumer_resilience run as the report shows them: per kill its
    moment, the entries pending, the identity killed; the identity after; the accounting."""
    outputs = [r.get("output") for r in journal.get("run", [])]
    random_kills = next((o for o in outputs if isinstance(o, dict) and "seed" in o), {})
    catch_up = next((o for o in outputs if isinstance(o, dict) and "pending_seen" in o), {})
    after = _after(journal) if journal.get("steady_states", {}).get("after") else {}
    accounting = (after.get("message-accounting-zero-loss") or {}).get("output") or {}
    kills = random_kills.get("kills") or []
    return {
        "backend": random_kills.get("backend"),
        "seed": random_kills.get("seed"),
        "kills": [
            {key: k.get(key) for key in ("n", "moment", "pending_at_kill", "down_s")}
            | {"killed": [(i["name"], i["started_at"]) for i in k["killed"]]}
            for k in kills
        ],
        "identity_after": [
            (i["name"], i["started_at"]) for i in (kills[-1].get("identities_after", []))
        ]
        if kills
        else [],
        "catch_up_kill": {
            "pending_seen": catch_up.get("pending_seen"),
            "killed": [(i["name"], i["started_at"]) for i in catch_up.get("identities", [])],
        },
        "accounting": {
            key: accounting.get(key) for key in ("acknowledged", "k6_accepted", "lost", "reason")
        },
    }


def test_consumer_resilience_on_containers(docker_stack, target_env, tmp_path):
    # a container takes seconds longer than a process to start and be ready (under CI's load up
    # to ~32 s per kill, catch-up included), so the smoke profile's four random kills can outlast
    # its 120 s load: a longer load (same rate, same criteria) still has a backlog for the
    # catch-up kill that follows them
    code, journal, output = _chaos(
        EXPERIMENTS / "consumer_resilience.json",
        tmp_path,
        target_env,
        "--var",
        "t8_messages:int=20000",
    )
    print(f"consumer_resilience on containers: {json.dumps(_kills_record(journal))}")
    assert code == 0, _why(journal, output)
    assert journal["status"] == "completed" and not journal["deviated"]
    after = _after(journal)
    reclaimed = after["entries-pending-at-kill-reclaimed"]["output"]
    assert reclaimed["pending_at_fault"] > 0, "the consumer must die holding entries"
    assert reclaimed["reclaimed"] == reclaimed["pending_at_fault"]
    kills = after["entries-pending-at-each-random-kill-reclaimed"]["output"]
    assert all(k["reclaimed"] == k["pending_at_kill"] for k in kills["kills"])
    accounting = after["message-accounting-zero-loss"]["output"]
    assert accounting["lost"] == 0 and accounting["acknowledged"] == accounting["k6_accepted"] > 0
    # every kill was a container kill: the identities recorded are the consumer's container
    record = _kills_record(journal)
    assert record["backend"] == "docker"
    killed = [i for k in record["kills"] for i in k["killed"]]
    assert killed and all(name.endswith("-consumer") for name, _ in killed)
    assert len({started for _, started in killed}) == len(killed)  # a new incarnation each time
    assert record["identity_after"] and record["identity_after"][0][1] not in {
        started for _, started in killed
    }
    assert faults.active(docker_stack.home) == []


def test_gateway_restart_on_containers(docker_stack, target_env, tmp_path):
    code, journal, output = _chaos(EXPERIMENTS / "gateway_restart.json", tmp_path, target_env)
    assert code == 0, _why(journal, output)
    assert journal["status"] == "completed" and not journal["deviated"]
    kill = next(
        r["output"]
        for r in journal["run"]
        if r["activity"].get("provider", {}).get("func") == "kill_service"
    )
    assert kill["backend"] == "docker" and kill["identities"][0]["service"] == "gateway"
    assert faults.active(docker_stack.home) == []


def test_cascading_failure_on_containers(docker_stack, target_env, tmp_path):
    code, journal, output = _chaos(EXPERIMENTS / "cascading_failure.json", tmp_path, target_env)
    assert code == 0, _why(journal, output)
    assert journal["status"] == "completed" and not journal["deviated"]
    same = _after(journal)["no-service-crashed-or-restarted"]["output"]
    assert same["ok"] and set(same["services"]) == {"auth", "api", "dispatcher", "consumer"}
    assert faults.active(docker_stack.home) == []
