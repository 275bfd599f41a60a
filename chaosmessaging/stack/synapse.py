"""Matrix Synapse in the embedded launcher (`chaosmessaging stack up --platform matrix`).

Synapse is a real messaging server nobody here wrote (`matrix-synapse` from PyPI, unmodified). The
launcher runs it on the embedded PostgreSQL (a database `synapse` with the C collation Synapse
requires), on a free loopback port, with a config written here: rate limits raised for load
tests, its Prometheus listener on, registration through a shared secret only (how the load-test
users are made), no federation listener and no federation peers. Everything lives in
`<home>/data/synapse/` (mode 0700, with an owner marker naming the home): the config, the signing
key, the shared secret (a file of its own, never on a command line or in a log) and the media.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx

from chaosmessaging.stack.state import ServiceRecord

__all__ = [
    "SERVER_NAME",
    "DATABASE",
    "OWNER_MARKER",
    "synapse_record",
    "write_config",
    "generate_keys",
    "register_users",
    "user_id",
]

SERVER_NAME = "chaosmessaging.localhost"
DATABASE = "synapse"
OWNER_MARKER = ".chaosmessaging-owner"
#: Synapse refuses a database whose collation is not C (it sorts by byte order).
DATABASE_OPTIONS = "ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"

# Raised far above any load the suite makes: a load test measures the server, not its limiter.
_LOTS = {"per_second": 100000, "burst_count": 100000}
RATE_LIMITS = {
    "rc_message": _LOTS,
    "rc_registration": _LOTS,
    "rc_registration_token_validity": _LOTS,
    "rc_login": {"address": _LOTS, "account": _LOTS, "failed_attempts": _LOTS},
    "rc_admin_redaction": _LOTS,
    "rc_joins": {"local": _LOTS, "remote": _LOTS},
    "rc_joins_per_room": _LOTS,
    "rc_3pid_validation": _LOTS,
    "rc_invites": {"per_room": _LOTS, "per_user": _LOTS, "per_issuer": _LOTS},
    "rc_third_party_invite": _LOTS,
    "rc_room_creation": _LOTS,
    "rc_presence": {"per_user": _LOTS},
    "rc_delayed_event_mgmt": _LOTS,
    "rc_reports": _LOTS,
    "rc_media_create": _LOTS,
    "rc_key_requests": _LOTS,
    "rc_profile": _LOTS,
    "rc_user_directory": _LOTS,
}

_LOG_CONFIG = """\
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  console:
    class: logging.StreamHandler
    formatter: precise
loggers:
  synapse.access.http: {level: WARNING}
  synapse.storage.SQL: {level: WARNING}
root:
  level: WARNING
  handlers: [console]
disable_existing_loggers: false
"""


def user_id(localpart: str) -> str:
    """`loadtest-3` -> `@loadtest-3:chaosmessaging.localhost`."""
    return f"@{localpart}:{SERVER_NAME}"


def data_dir(home: Path) -> Path:
    return home / "data" / "synapse"


def write_config(home: Path, port: int, metrics_port: int, pg_host: str, pg_port: int) -> Path:
    """Write Synapse's config (and its log config, secret files, owner marker) under
    `<home>/data/synapse/`; return the config's path. Secrets made once and kept across starts."""
    root = data_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    (root / OWNER_MARKER).write_text(str(home) + "\n")
    secret_file = root / "registration_shared_secret"
    if not secret_file.exists():
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    macaroon_file = root / "macaroon_secret_key"
    if not macaroon_file.exists():
        fd = os.open(macaroon_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    (root / "log.yaml").write_text(_LOG_CONFIG)
    config = {
        "server_name": SERVER_NAME,
        "pid_file": str(root / "homeserver.pid"),
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "report_stats": False,
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                # client API (and the admin API under it); no federation resource
                "resources": [{"names": ["client"], "compress": False}],
            },
            {"port": metrics_port, "bind_addresses": ["127.0.0.1"], "type": "metrics"},
        ],
        "enable_metrics": True,
        "database": {
            "name": "psycopg2",
            "args": {
                "user": "postgres",
                "database": DATABASE,
                "host": pg_host,
                "port": pg_port,
                "cp_min": 5,
                "cp_max": 10,
                "connect_timeout": 5,
            },
        },
        "log_config": str(root / "log.yaml"),
        "media_store_path": str(root / "media"),
        "signing_key_path": str(root / "signing.key"),
        "registration_shared_secret_path": str(secret_file),
        "macaroon_secret_key_path": str(macaroon_file),
        "enable_registration": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "presence": {"enabled": False},
        "url_preview_enabled": False,
        **RATE_LIMITS,
    }
    path = root / "homeserver.yaml"
    # JSON is YAML: no YAML writer needed
    path.write_text(json.dumps(config, indent=2) + "\n")
    os.chmod(path, 0o600)
    return path


def generate_keys(config: Path, log: Path) -> None:
    """Create the signing key Synapse needs before its first start (`--generate-keys`)."""
    with open(log, "ab") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(config), "--generate-keys"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"synapse --generate-keys failed (exit {proc.returncode}), see {log}")


def synapse_record(
    home: Path, host: str, port: int, metrics_port: int, config: Path, log: Path
) -> ServiceRecord:
    """The launcher's record for Synapse: alive = `/health` answers 200, ready = the client
    API's `/_matrix/client/versions` answers 200 (it needs the database)."""
    return ServiceRecord(
        name="synapse",
        pid=None,
        host=host,
        port=port,
        address=f"http://{host}:{port}",
        cmd=[sys.executable, "-m", "synapse.app.homeserver", "-c", str(config)],
        env={"PYTHONUNBUFFERED": "1", "SYNAPSE_CACHE_FACTOR": "2.0"},
        log=str(log),
        health="/health",
        ready="/_matrix/client/versions",
        metrics_address=f"http://{host}:{metrics_port}",  # path: /_synapse/metrics
    )


def register_users(
    base_url: str, home: Path, localparts: list[str], password: str, timeout: float = 30.0
) -> int:
    """Create each user through the shared-secret admin registration (an existing one is kept);
    return how many were created. The password travels in the request body only."""
    secret = (data_dir(home) / "registration_shared_secret").read_text().strip().encode()
    created = 0
    url = f"{base_url}/_synapse/admin/v1/register"
    with httpx.Client(timeout=timeout) as client:
        for name in localparts:
            nonce = client.get(url).raise_for_status().json()["nonce"]
            mac = hmac.new(secret, digestmod=hashlib.sha1)
            for part in (nonce, name, password, "notadmin"):
                mac.update(part.encode() + (b"\x00" if part != "notadmin" else b""))
            answer = client.post(
                url,
                json={
                    "nonce": nonce,
                    "username": name,
                    "password": password,
                    "admin": False,
                    "mac": mac.hexdigest(),
                },
            )
            if answer.status_code == 200:
                created += 1
            elif answer.status_code == 400 and answer.json().get("errcode") == "M_USER_IN_USE":
                continue
            else:
                raise RuntimeError(
                    f"registering {name} on Synapse failed: {answer.status_code} "
                    f"{answer.json().get('errcode', '')} {answer.json().get('error', '')}"
                )
    return created
