"""Supply-chain checks for CI: pip-audit over the locked tree (constraints.txt) and bandit over
the project's own code.

pip-audit asks PyPI's JSON API (`--vulnerability-service pypi`) about every pinned version. A
vulnerability that has a fixed version fails the audit unless .ci/audit-exceptions.toml lists it
with a reason and an expiry date; an expired exception fails it too. A package the service could
not answer for is reported as not audited (PIP_AUDIT_STRICT=1 makes that fail as well).

Run:  .venv/bin/python .ci/audit.py
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess  # nosec B404
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXCEPTIONS = ROOT / ".ci" / "audit-exceptions.toml"
OWN_CODE = ["pynomaly_core", "workbench", "flows", "tasks", "benchmarks", ".ci"]
BIN = Path(sys.executable).parent


def load_exceptions(path: Path) -> list[dict]:
    exceptions = tomllib.loads(path.read_text()).get("exception", [])
    for entry in exceptions:
        missing = {"id", "package", "reason", "expires"} - set(entry)
        if missing:
            raise SystemExit(f"{path}: exception {entry.get('id', '?')} lacks {', '.join(sorted(missing))}")
        if not isinstance(entry["expires"], datetime.date):
            raise SystemExit(f"{path}: exception {entry['id']}: expires must be a date (YYYY-MM-DD)")
    return exceptions


def judge(report: dict, exceptions: list[dict], today: datetime.date) -> dict:
    """Sort pip-audit's JSON report into what fails the build and what does not."""
    accepted = {entry["id"]: entry for entry in exceptions if entry["expires"] >= today}
    verdict = {"failures": [], "accepted": [], "unfixed": [], "expired": [e for e in exceptions if e["expires"] < today], "unaudited": []}
    for dependency in report["dependencies"]:
        if dependency.get("skip_reason"):
            verdict["unaudited"].append(dependency["name"])
        for vulnerability in dependency.get("vulns", []):
            found = {"package": dependency["name"], "version": dependency.get("version"), **vulnerability}
            ids = {vulnerability["id"], *vulnerability.get("aliases", [])}
            if ids & set(accepted):
                verdict["accepted"].append(found)
            elif vulnerability.get("fix_versions"):
                verdict["failures"].append(found)
            else:
                verdict["unfixed"].append(found)
    return verdict


def pip_audit(requirements: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        # Pins only (--no-deps --disable-pip): nothing is installed or resolved; the lock is the tree.
        subprocess.run([str(BIN / "pip-audit"), "-r", str(requirements), "--vulnerability-service", "pypi", "--no-deps",  # nosec B603
                        "--disable-pip", "--progress-spinner", "off", "--format", "json", "--output", str(out)],
                       capture_output=True, text=True)
        if not out.exists():
            raise SystemExit("pip-audit wrote no report")
        return json.loads(out.read_text())


def bandit() -> int:
    return subprocess.run([str(BIN / "bandit"), "-q", "-r", *OWN_CODE], cwd=ROOT).returncode  # nosec B603


def main() -> int:
    verdict = judge(pip_audit(ROOT / "constraints.txt"), load_exceptions(EXCEPTIONS), datetime.date.today())
    for found in verdict["failures"]:
        print(f"pip-audit: {found['package']} {found['version']}: {found['id']} fixed in {', '.join(found['fix_versions'])}")
    for entry in verdict["expired"]:
        print(f"pip-audit: the exception for {entry['id']} ({entry['package']}) expired on {entry['expires']}")
    for found in verdict["accepted"]:
        print(f"pip-audit: accepted until its expiry: {found['package']} {found['id']}")
    for found in verdict["unfixed"]:
        print(f"pip-audit: no fixed version yet: {found['package']} {found['version']} {found['id']}")
    strict = os.environ.get("PIP_AUDIT_STRICT") == "1"
    if verdict["unaudited"]:
        print(f"pip-audit: NOT AUDITED: {len(verdict['unaudited'])} pinned packages got no answer from the vulnerability service"
              + ("" if strict else " (PIP_AUDIT_STRICT=1 fails on this)"))
    audited = not verdict["failures"] and not verdict["expired"] and not (strict and verdict["unaudited"])
    print(f"pip-audit: {'passed' if audited else 'FAILED'}")
    code = bandit()
    print(f"bandit: {'passed' if code == 0 else 'FAILED'}")
    return 0 if audited and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
