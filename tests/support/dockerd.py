"""A private Docker Engine for the tests: `dockerd` (Debian's docker.io) started and stopped by
the test session itself, never the machine's own engine.

Everything of it lives in one private directory: its data root, exec root (where it starts its
own containerd), pidfile and API socket. No bridge, no iptables: containers use the host's
network. Storage: overlay2, else vfs (a filesystem overlayfs cannot sit on). When the engine
cannot start, `Unavailable` says exactly why (not root, no dockerd binary, the daemon's own
last log lines), so the tests skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Engine", "Unavailable", "start_engine", "stop_engine"]


class Unavailable(RuntimeError):
    """dockerd cannot run here; the message says why."""


@dataclass
class Engine:
    root: Path
    proc: subprocess.Popen
    storage_driver: str
    started_s: float

    @property
    def host(self) -> str:
        return f"unix://{self.root}/docker.sock"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"


def _try(root: Path, driver: str, timeout: float) -> Engine:
    import docker

    for sub in ("data", "exec"):
        (root / sub).mkdir(exist_ok=True)
    log = root / "dockerd.log"
    started = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                "dockerd",
                "--storage-driver",
                driver,
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--data-root",
                str(root / "data"),
                "--exec-root",
                str(root / "exec"),
                "--host",
                f"unix://{root}/docker.sock",
                "--pidfile",
                str(root / "dockerd.pid"),
                # its own containerd namespaces: nothing shared with another engine on this host
                "--containerd-namespace",
                f"cm{os.getpid()}",
                "--containerd-plugins-namespace",
                f"cm{os.getpid()}p",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    engine = Engine(root, proc, driver, 0.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            docker.DockerClient(base_url=engine.host, timeout=5).ping()
            engine.started_s = round(time.monotonic() - started, 1)
            return engine
        except Exception:
            time.sleep(0.3)
    stop_engine(engine, remove=False)
    lines = log.read_text(errors="replace").strip().splitlines()[-5:]
    raise Unavailable(
        f"dockerd --storage-driver {driver} did not start within {timeout:g} s "
        f"(exit {proc.returncode}); its log ends: " + " | ".join(lines)
    )


def start_engine(timeout: float = 60.0) -> Engine:
    """Start a private dockerd (overlay2, else vfs) or raise Unavailable saying why."""
    if os.geteuid() != 0:
        raise Unavailable("dockerd needs root (this test session runs as a normal user)")
    if shutil.which("dockerd") is None:
        raise Unavailable("no dockerd binary: install docker.io (apt-get install docker.io)")
    if shutil.which("mmdebstrap") is None:
        raise Unavailable("no mmdebstrap to build the image offline (apt-get install mmdebstrap)")
    # short: a Unix socket path must fit in 108 bytes
    root = Path(tempfile.mkdtemp(prefix="cm-dockerd-", dir="/tmp"))
    errors = []
    for driver in ("overlay2", "vfs"):
        try:
            return _try(root, driver, timeout)
        except Unavailable as exc:
            errors.append(str(exc))
            shutil.rmtree(root / "data", ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    raise Unavailable("; ".join(errors))


def stop_engine(engine: Engine, remove: bool = True) -> None:
    """Stop the engine (its containers with it) and delete its directory."""
    if engine.proc.poll() is None:
        engine.proc.send_signal(signal.SIGTERM)
        try:
            engine.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(engine.proc.pid, signal.SIGKILL)
            engine.proc.wait(10)
    if remove:
        # overlay mounts a killed engine left behind would make rmtree fail halfway
        with open("/proc/mounts") as mounts:
            left = [line.split()[1] for line in mounts if str(engine.root) in line]
        for mountpoint in sorted(left, reverse=True):
            subprocess.run(["umount", "-l", mountpoint], check=False)
        shutil.rmtree(engine.root, ignore_errors=True)
