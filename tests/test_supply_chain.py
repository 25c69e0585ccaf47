"""The supply-chain gate (.ci/audit.py): pip-audit's report of the locked tree is judged against
the exceptions file, and bandit passes over the project's own code."""

import datetime
import importlib.util
import json
import subprocess

import pytest
from packaging.version import Version
from pip_audit._format import JsonFormat
from pip_audit._service import ResolvedDependency, SkippedDependency, VulnerabilityResult

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("audit", ROOT / ".ci" / "audit.py")
audit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(audit)
TODAY = datetime.date(2026, 11, 30)


def report(vulnerabilities: dict) -> dict:
    """pip-audit's own JSON report for the given dependencies and their findings."""
    return json.loads(JsonFormat(output_desc=False, output_aliases=True).format(vulnerabilities, []))


def finding(vid: str, fixed: list[str], alias: str | None = None) -> VulnerabilityResult:
    return VulnerabilityResult(id=vid, description="", fix_versions=[Version(v) for v in fixed], aliases={alias} if alias else set())


def exceptions_file(tmp_path, text: str):
    path = tmp_path / "exceptions.toml"
    path.write_text(text)
    return audit.load_exceptions(path)


def test_a_vulnerability_with_a_fixed_version_fails_unless_excepted_until_a_date(tmp_path):
    found = report({
        ResolvedDependency("urllib3", Version("2.0.0")): [finding("GHSA-aaaa", ["2.0.7"], alias="CVE-2023-1")],
        ResolvedDependency("somelib", Version("1.0")): [finding("PYSEC-1", [])],  # no fix yet: reported, not failed
        ResolvedDependency("requests", Version("2.32.0")): [],
        SkippedDependency("private-pkg", "Dependency not found on PyPI and could not be audited"): [],
    })
    verdict = audit.judge(found, [], TODAY)
    assert [(f["package"], f["id"], f["fix_versions"]) for f in verdict["failures"]] == [("urllib3", "GHSA-aaaa", ["2.0.7"])]
    assert [f["id"] for f in verdict["unfixed"]] == ["PYSEC-1"] and verdict["unaudited"] == ["private-pkg"]

    accepted = exceptions_file(tmp_path, '[[exception]]\nid = "CVE-2023-1"\npackage = "urllib3"\nreason = "not reachable"\nexpires = 2027-01-31\n')
    verdict = audit.judge(found, accepted, TODAY)
    assert verdict["failures"] == [] and [f["id"] for f in verdict["accepted"]] == ["GHSA-aaaa"]  # matched by its alias
    expired = exceptions_file(tmp_path, '[[exception]]\nid = "GHSA-aaaa"\npackage = "urllib3"\nreason = "r"\nexpires = 2026-11-29\n')
    verdict = audit.judge(found, expired, TODAY)
    assert [f["id"] for f in verdict["failures"]] == ["GHSA-aaaa"] and [e["id"] for e in verdict["expired"]] == ["GHSA-aaaa"]


def test_an_exception_needs_a_reason_and_a_date(tmp_path):
    with pytest.raises(SystemExit, match="lacks reason"):
        exceptions_file(tmp_path, '[[exception]]\nid = "X"\npackage = "p"\nexpires = 2027-01-01\n')
    with pytest.raises(SystemExit, match="expires must be a date"):
        exceptions_file(tmp_path, '[[exception]]\nid = "X"\npackage = "p"\nreason = "r"\nexpires = "soon"\n')


def test_bandit_finds_nothing_unjustified_in_the_project_code():
    result = subprocess.run([str(audit.BIN / "bandit"), "-q", "-r", *audit.OWN_CODE, "-f", "json"], cwd=ROOT, capture_output=True, text=True)
    findings = json.loads(result.stdout)["results"]
    assert findings == [], [(f["filename"], f["line_number"], f["test_id"]) for f in findings]


def test_bandit_flags_what_it_should(tmp_path):
    (tmp_path / "bad.py").write_text("import subprocess\nsubprocess.call('ls ' + input(), shell=True)\n")
    result = subprocess.run([str(audit.BIN / "bandit"), "-q", "-f", "json", str(tmp_path / "bad.py")], capture_output=True, text=True)
    assert {f["test_id"] for f in json.loads(result.stdout)["results"]} >= {"B602"}
