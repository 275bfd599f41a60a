"""Everything a user applies to Kubernetes validates offline (no cluster can run here).

Core kinds (Job, ServiceAccount, Role, RoleBinding) against the Kubernetes schemas that
kubernetes-validate carries, strictly (an unknown field is an error). The k6 operator's TestRun is
not a core kind: its spec against deploy/schemas/ (written from the operator's CRD), and its runner
pod's core/v1 parts (env, volumes, mounts) against the Kubernetes schemas, inside a Pod.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
TESTRUN_SCHEMA = json.loads((DEPLOY / "schemas" / "k6.io_testrun_v1alpha1.schema.json").read_text())
VERSION = kubernetes_validate.latest_version()


def _documents() -> list[tuple[str, dict]]:
    return [
        (f"{path.name}#{i}", doc)
        for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
        for i, doc in enumerate(yaml.safe_load_all(path.read_text()))
        if doc
    ]


def _testrun_snippets_in_docs() -> list[dict]:
    docs = [ROOT / "docs" / "scale-out.md", ROOT / "docs" / "deploy.md"]
    found = []
    for path in docs:
        if path.exists():
            for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S):
                found += [
                    d
                    for d in yaml.safe_load_all(block)
                    if isinstance(d, dict) and d.get("kind") == "TestRun"
                ]
    return found


def _validate_testrun(doc: dict) -> None:
    jsonschema.validate(doc, TESTRUN_SCHEMA)
    runner = doc["spec"].get("runner", {})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "k6-runner"},
        "spec": {
            "containers": [
                {
                    "name": "k6",
                    "image": runner.get("image", "grafana/k6:latest"),
                    **{
                        k: runner[k]
                        for k in ("env", "envFrom", "volumeMounts", "resources")
                        if k in runner
                    },
                }
            ],
            **({"volumes": runner["volumes"]} if "volumes" in runner else {}),
        },
    }
    kubernetes_validate.validate(pod, VERSION, strict=True)


@pytest.mark.parametrize("name,doc", _documents(), ids=[n for n, _ in _documents()])
def test_every_manifest_validates_offline(name, doc):
    if doc["kind"] == "TestRun":
        _validate_testrun(doc)
    else:
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_validation_catches_mistakes():
    job = next(d for _, d in _documents() if d["kind"] == "Job")
    broken = json.loads(json.dumps(job))
    broken["spec"]["template"]["spec"]["containers"][0]["envv"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)
    testrun = next(d for _, d in _documents() if d["kind"] == "TestRun")
    for mutate in (
        lambda s: s.pop("parallelism"),
        lambda s: s.update(paralelism=4),
        lambda s: s.update(cleanup="always"),
        lambda s: s["script"]["configMap"].pop("name"),
    ):
        broken = json.loads(json.dumps(testrun))
        mutate(broken["spec"])
        with pytest.raises(jsonschema.ValidationError):
            _validate_testrun(broken)
    broken = json.loads(json.dumps(testrun))
    broken["spec"]["runner"]["env"][0]["valueFrom"] = {"secretKeyRef": {"name": "x"}}  # no key
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_testrun(broken)


def test_rbac_grants_the_pod_backend_exactly_what_it_calls():
    role = next(d for _, d in _documents() if d["kind"] == "Role")
    granted = {(r["resources"][0], v) for r in role["rules"] for v in r["verbs"]}
    # list/get: instances and readiness; delete: kill/stop; pods/exec create: exec kill, pause
    assert granted == {
        ("pods", "get"),
        ("pods", "list"),
        ("pods", "delete"),
        ("pods/exec", "create"),
    }
    binding = next(d for _, d in _documents() if d["kind"] == "RoleBinding")
    account = next(d for _, d in _documents() if d["kind"] == "ServiceAccount")
    job = next(d for _, d in _documents() if d["kind"] == "Job")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    namespaces = {d["metadata"].get("namespace") for _, d in _documents()}
    assert namespaces == {"chat"}  # one namespace, the platform's: no cluster-wide grant


def test_testruns_give_setup_the_auth_url_and_the_password_secret():
    """k6/lib/auth.js's setup() throws without LOGIN_PASSWORD, and lib/platform.js without
    PLATFORM_FILE (the services' addresses, login, send): every TestRun we ship or document
    must set both, the platform file mounted from a ConfigMap, the password from a Secret,
    never as a literal."""
    auth_js = (ROOT / "k6" / "lib" / "auth.js").read_text()
    assert "__ENV.LOGIN_PASSWORD" in auth_js
    assert "__ENV.PLATFORM_FILE" in (ROOT / "k6" / "lib" / "platform.js").read_text()
    testruns = [d for _, d in _documents() if d["kind"] == "TestRun"] + _testrun_snippets_in_docs()
    assert len(testruns) >= 2  # deploy/ and docs/scale-out.md
    for doc in testruns:
        _validate_testrun(doc)
        env = {e["name"]: e for e in doc["spec"]["runner"]["env"]}
        platform_file = env["PLATFORM_FILE"]["value"]
        mounts = {m["mountPath"]: m["name"] for m in doc["spec"]["runner"]["volumeMounts"]}
        volumes = {v["name"]: v for v in doc["spec"]["runner"]["volumes"]}
        mount = next(p for p in mounts if platform_file.startswith(p.rstrip("/") + "/"))
        assert "configMap" in volumes[mounts[mount]], "the platform file comes from a ConfigMap"
        assert "value" not in env["LOGIN_PASSWORD"]
        assert env["LOGIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"]
        # split runners are judged on merged raw samples, not on per-segment p95 thresholds
        assert "P95_MS" not in env and "--out csv=" in doc["spec"]["arguments"]
