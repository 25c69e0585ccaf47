"""The malformed-input corpus (tests/malformed.py) at every entry point: the `validate` stage,
`pynomaly score`, the REST server, `pynomaly monitor` and the Redis consumer. Bad rows are
rejected with their row and column while the others are scored; an unusable file is a clear
error with exit status 2; never a traceback."""

import contextlib
import csv
import io
import json
import re
import shutil
import urllib.error
import urllib.request
import uuid

import mlflow
import pandas as pd
import pytest
import redis

from pynomaly_core import cli, stages
from pynomaly_core.monitoring import stream
from tests.conftest import MODEL_URI, ROOT, demo_config, prefect_harness, write_config
from tests.malformed import CASES, N_ROWS
from tests.services import serving

ROW_CASES = [case for case in CASES if case.rejected is not None]


def small_config():
    return demo_config(detectors=["iforest"], n_trials=2, cv_folds=2)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder with a registered champion, as the current directory, inside a Prefect test server."""
    root = tmp_path_factory.mktemp("malformed")
    shutil.copytree(ROOT / "data" / "raw", root / "data" / "raw")
    shutil.copytree(ROOT / "configs", root / "configs")  # `pynomaly serve` reads the demo config
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        for name in ("validate", "preprocess", "train", "evaluate", "register"):
            stages.STAGES[name](small_config())
        with prefect_harness():
            yield root
        mlflow.set_tracking_uri(None)


def _write(case, folder) -> str:
    path = folder / f"{case.name}.csv"
    path.write_bytes(case.content)
    return str(path)


def _cli(*args: str) -> tuple[int, str, str]:
    """Run `pynomaly ARGS`: exit status, stdout, stderr. (Not capsys: Prefect's log handler keeps
    the stream of the first flow run, which capsys closes after that test.)"""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def _check_rejected(case, rejected_file, n_scored: int) -> None:
    """The rows of the verdict, and only they, were set aside, each with a reason naming its column."""
    rejected = pd.read_csv(rejected_file) if case.rejected else pd.DataFrame({"_row": [], "_errors": []})
    assert rejected["_row"].tolist() == sorted(case.rejected)
    for row, errors in zip(rejected["_row"], rejected["_errors"]):
        assert errors.startswith(f"{case.rejected[row]}: ") or f"; {case.rejected[row]}: " in errors, errors
    assert n_scored == N_ROWS - len(case.rejected)


def _check_file_error(case, path, code, stderr) -> None:
    assert code == 2 and "Traceback" not in stderr
    assert stderr.startswith("pynomaly: error: ") and path in stderr
    assert re.search(case.error, stderr), stderr


@pytest.mark.parametrize("case", CASES, ids=str)
def test_validate_stage(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(case, tmp_path)
    config = demo_config()
    config = config.model_copy(update={"data": config.data.model_copy(update={"source": path})})
    code, out, err = _cli("stage", "validate", "--config", str(write_config(config, tmp_path / "case.yaml")))
    if case.error:
        _check_file_error(case, path, code, err)
    else:
        assert code == 0, err
        result = json.loads(out)
        assert result["n_rows"] == N_ROWS
        _check_rejected(case, config.paths.quarantine, result["n_valid"])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_score_command(case, project):
    path = _write(case, project)
    output = project / f"{case.name}.scored.csv"
    code, out, err = _cli("score", "--model", MODEL_URI, path, str(output))
    if case.error:
        _check_file_error(case, path, code, err)
        assert not output.exists()
    else:
        assert code == 0, err
        scored = pd.read_csv(output)
        assert scored["score"].notna().all() and set(scored["is_anomaly"]) <= {0, 1}
        _check_rejected(case, project / f"{case.name}.scored.rejected.csv", len(scored))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_monitor_command(case, project):
    path = _write(case, project)
    config_path = write_config(small_config(), project / "small.yaml")
    code, out, err = _cli("monitor", "--config", str(config_path), "--batch", path)
    if case.error:
        _check_file_error(case, path, code, err)
    else:
        assert code == 0, err
        scored = pd.read_parquet(project / "data" / "scored" / f"{case.name}.parquet")
        assert scored["score"].notna().all()
        _check_rejected(case, project / "data" / "scored" / f"{case.name}.rejected.csv", len(scored))


@pytest.fixture(scope="module")
def server(project):
    """`pynomaly serve` of the champion, on a free port."""
    with serving(project) as url:
        yield url


@pytest.mark.parametrize("case", CASES, ids=str)
def test_rest_server(case, server):
    """The case's bytes as a CSV request body: any bad row fails the request with 400, naming every bad row and its column."""
    request = urllib.request.Request(f"{server}/invocations", data=case.content, headers={"Content-Type": "text/csv"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, body = response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        status, body = err.code, json.loads(err.read())
    if case.rejected == {}:
        assert status == 200 and len(body["predictions"]) == N_ROWS
        return
    assert status == 400 and "Traceback" not in body["message"], body
    if case.error:
        assert re.search(case.rest_error or case.error, body["message"]), body["message"]
    else:
        summary, *rows = body["message"].split("Error: request: ")[1].splitlines()
        assert summary == f"{len(case.rejected)} of {N_ROWS} rows rejected, none scored:"
        reasons = dict(line.split(": ", 1) for line in rows)
        assert reasons.keys() == {f"row {row}" for row in case.rejected}
        for row, column in case.rejected.items():
            assert reasons[f"row {row}"].startswith(f"{column}: ") or f"; {column}: " in reasons[f"row {row}"], reasons


def test_stream_dead_letters_rejected_events_and_acknowledges_each_once(project):
    """Every row-level case's records as events, plus one that is not UTF-8: each event is
    acknowledged, and is either scored or dead-lettered with its reasons."""
    client = redis.Redis()
    name = f"pynomaly-malformed-{uuid.uuid4().hex[:8]}"
    settings = {"input": f"{name}:in", "output": f"{name}:out", "dead_letter": f"{name}:dead", "group": "scorers", "batch_size": 25, "block_ms": 50}
    config = small_config()
    config = config.model_copy(update={"monitoring": config.monitoring.model_copy(update={"stream": config.monitoring.stream.model_copy(update=settings)})})
    expected = {}  # event id -> the column its rejection names, or None when it is scored
    try:
        for case in ROW_CASES:
            header, *rows = csv.reader(io.StringIO(case.content.decode("utf-8-sig")))
            for number, values in enumerate(rows, start=1):
                event_id = client.xadd(settings["input"], dict(zip(header, values))).decode()
                expected[event_id] = case.rejected.get(number)
        good = dict(zip(*list(csv.reader(io.StringIO(CASES[0].content.decode())))[:2]))
        not_utf8 = client.xadd(settings["input"], {**good, "mean_radius": b"14\xb72"}).decode()
        totals = stream.StreamScorer(config, consumer="a").run(idle_exit=True)

        scored = {fields[b"event_id"].decode() for _, fields in client.xrange(settings["output"])}
        dead = {fields[b"event_id"].decode(): fields for _, fields in client.xrange(settings["dead_letter"])}
        assert scored | dead.keys() == {*expected, not_utf8} and not scored & dead.keys()
        assert scored == {event_id for event_id, column in expected.items() if column is None}
        for event_id, column in expected.items():
            if column is not None:
                assert f"{column}: " in dead[event_id][b"_errors"].decode(), dead[event_id]
        assert dead[not_utf8][b"_errors"].startswith(b"not UTF-8 text") and dead[not_utf8][b"mean_radius"] == b"14\xb72"
        assert totals["events"] == totals["scored"] + totals["rejected"] == len(expected) + 1
        assert client.xpending(settings["input"], "scorers")["pending"] == 0
    finally:
        client.delete(settings["input"], settings["output"], settings["dead_letter"])
