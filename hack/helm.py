#!/usr/bin/env python3
"""Real Helm for the tests, through helm-sdkpy (the official Helm library behind a C ABI).

Debian has no `helm`; hack/install-testbed.sh puts helm-sdkpy into a venv at
${DHAN_OPERATOR_CACHE:-~/.cache/dhan-operator}/helm-venv. Run this with that venv's python:

  helm.py lint CHART
      Lints the chart (strict: warnings fail too, info messages do not).
  helm.py install NAME NAMESPACE CHART VALUES_JSON KUBECONFIG
      Installs CHART as release NAME into the existing NAMESPACE, with the values given as one JSON
      object, without waiting for readiness (no kubelet runs on the test bed). Prints the release
      status and the kinds/names of the installed objects.

Exits 0 on success; on failure prints "helm.py: ..." to stderr and exits 1 (2 for bad usage).
"""

import asyncio
import json
import re
import sys


def die(message, code=1):
    print(f"helm.py: {message}", file=sys.stderr)
    sys.exit(code)


try:
    import helm_sdkpy
except ImportError as error:  # wrong interpreter, or the venv was never built
    die(f"cannot import helm_sdkpy ({error}); run hack/install-testbed.sh and use the python of "
        "its helm-venv")

# Helm's support.Severity: UNKNOWN=0, INFO=1, WARNING=2, ERROR=3.
SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def lint(chart):
    result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(chart))
    messages = result.get("Messages") or []
    failed = False
    for message in messages:
        severity = message.get("Severity", 0)
        # The library serialises Go errors as {}: only the path and severity survive.
        err = message.get("Err")
        text = err if isinstance(err, str) and err else ""
        print(f"{SEVERITY.get(severity, severity)}: {message.get('Path', '?')} {text}".rstrip())
        failed |= severity >= 2
    if result.get("Errors") or failed:
        die(f"lint of {chart} failed ({len(result.get('Errors') or [])} error(s)). The Helm "
            "library's lint gives no message text; `helm.py install` of the chart into a test "
            "control plane reports template errors in full")
    print(f"lint ok: {chart} ({len(messages)} message(s), none above INFO)")


def install(name, namespace, chart, values_json, kubeconfig):
    try:
        values = json.loads(values_json)
    except json.JSONDecodeError as error:
        die(f"VALUES_JSON is not JSON: {error}", 2)
    if not isinstance(values, dict):
        die("VALUES_JSON must be a JSON object", 2)
    config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=kubeconfig)
    release = asyncio.run(
        helm_sdkpy.Install(config).run(name, chart, values=values, wait=False, timeout=60)
    )
    status = (release.get("info") or {}).get("status")
    if status != "deployed":
        die(f"release {namespace}/{name} is {status!r}, not deployed: "
            f"{(release.get('info') or {}).get('description')}")
    print(f"installed {namespace}/{name}: {status}")
    for document in re.split(r"^---$", release.get("manifest") or "", flags=re.M):
        kind = re.search(r"^kind: *(\S+)", document, re.M)
        object_name = re.search(r"^  name: *(\S+)", document, re.M)
        if kind and object_name:
            print(f"  {kind.group(1)} {object_name.group(1)}")


def main(argv):
    if len(argv) == 2 and argv[0] == "lint":
        lint(argv[1])
    elif len(argv) == 6 and argv[0] == "install":
        install(*argv[1:])
    else:
        die("usage: helm.py lint CHART | helm.py install NAME NAMESPACE CHART VALUES_JSON "
            "KUBECONFIG", 2)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except helm_sdkpy.HelmError as error:
        die(f"{type(error).__name__}: {error}")
