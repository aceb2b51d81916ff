#!/usr/bin/env python3
"""Offline checks of the Helm chart, run by the test command
(e2e/tests/deploy.rs) in a virtual environment with helm-python-sdk (Helm's
Go SDK, no helm binary) and kubernetes-validate:

  check.py <chart dir> <dir of the Conclave binaries> <k8s version>...

For the default values (plus a service key) and for values-ha.yaml it
1. lints the chart (strict) and renders it;
2. validates every manifest with kubernetes-validate --strict against each
   Kubernetes version given;
3. checks that every CONCLAVE_* variable the chart gives a container names a
   key of that binary's `--print-config` (services ignore unknown ones, so a
   typo would pass silently otherwise).
Prints what it checked; exits non-zero on the first failure.
"""

import os
import subprocess
import sys
import tempfile
import tomllib

import yaml
from helm_python import Chart, lint


def fail(message):
    print("FAILED: " + message)
    sys.exit(1)


def config_keys(binary):
    """Every key path of a binary's configuration, lower-cased."""
    out = subprocess.run([binary, "--print-config"], capture_output=True, text=True, check=True)
    tree = tomllib.loads(out.stdout)
    keys = set()

    def walk(node, prefix):
        for k, v in node.items():
            path = prefix + [k.lower()]
            keys.add(tuple(path))
            if isinstance(v, dict):
                walk(v, path)

    walk(tree, [])
    return keys


def env_path(name):
    return tuple(part.lower() for part in name[len("CONCLAVE_"):].split("__"))


def containers(doc):
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def main():
    chart_dir, bin_dir, versions = sys.argv[1], sys.argv[2], sys.argv[3:]
    if not versions:
        fail("no Kubernetes version given")
    report = lint(chart_dir, strict=True)
    # severities: 1 info, 2 warning, 3 error
    serious = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    if report.get("errors") or serious:
        fail(f"helm lint --strict: {report}")
    infos = [m["error"] for m in report.get("messages", [])]
    print(f"lint --strict: ok ({len(infos)} notes: {'; '.join(infos)})")
    chart = Chart.load(chart_dir)
    with open(os.path.join(chart_dir, "values-ha.yaml")) as f:
        ha = yaml.safe_load(f)
    value_sets = [("default", {"serviceKey": {"value": "a-service-key"}}), ("values-ha.yaml", ha)]
    keys = {}
    for label, values in value_sets:
        rendered = chart.render(values, name="conclave", namespace="conclave")
        docs = []
        for template, text in sorted(rendered.items()):
            for doc in yaml.safe_load_all(text):
                if doc:
                    docs.append((template, doc))
        kinds = sorted({d["kind"] for _, d in docs})
        print(f"{label}: {len(docs)} manifests ({', '.join(kinds)})")
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for i, (template, doc) in enumerate(docs):
                path = os.path.join(tmp, f"{i:02d}-{doc['kind']}-{doc['metadata']['name']}.yaml")
                with open(path, "w") as f:
                    yaml.safe_dump(doc, f)
                files.append(path)
            for version in versions:
                result = subprocess.run(
                    [sys.executable, "-m", "kubernetes_validate",
                     "--strict", "--quiet", "-k", version] + files,
                    capture_output=True, text=True)
                if result.returncode != 0:
                    fail(f"{label}, Kubernetes {version}:\n{result.stdout}{result.stderr}")
                print(f"{label}: kubernetes-validate --strict -k {version}: ok")
        checked = 0
        for template, doc in docs:
            for c in containers(doc):
                binary = os.path.basename((c.get("command") or [""])[0])
                names = [e["name"] for e in c.get("env", []) if e["name"].startswith("CONCLAVE_")]
                if not names:
                    continue
                if binary not in keys:
                    path = os.path.join(bin_dir, binary)
                    if not os.access(path, os.X_OK):
                        fail(f"{template}: no binary {path} to ask for its configuration")
                    keys[binary] = config_keys(path)
                for name in names:
                    if env_path(name) not in keys[binary]:
                        fail(f"{template}: {binary} has no configuration key for {name}")
                    checked += 1
        print(f"{label}: {checked} CONCLAVE_* settings, each a key of its service's --print-config")
    print("ok")


if __name__ == "__main__":
    main()
