"""The `pynomaly` command line."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import typing
from pathlib import Path

from pydantic import ValidationError

from .config import ConfigError, ReadOptions, TableFormat, ThresholdConfig, TrainConfig, load_config
from .data.io import BATCH_ROWS
from .errors import DataError

DEFAULT_CONFIG = "configs/demo.yaml"


def _prefect_environment() -> None:
    """Prefect's ephemeral mode, with its database in the project folder."""
    os.environ.setdefault("PREFECT_HOME", str(Path(".prefect").resolve()))
    # The ephemeral server's first start (database migration) can exceed Prefect's 20 s on a busy machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _run(args) -> int:
    # The CLI is the outermost layer, so it may start the Prefect flow (nothing else imports flows).
    _prefect_environment()
    from flows.training import training_flow

    from .summary import print_summary
    from .tracking.store import tracking_uri

    config = load_config(args.config)
    summary = training_flow(config)
    if args.result:  # for a caller that reads the outcome (the workbench's retrain button)
        Path(args.result).write_text(summary.model_dump_json(indent=2))
    print_summary(summary, tracking_uri(config.tracking))
    return 0


def _init(args) -> int:
    from .data.schema import init_config

    path, config, left_out = init_config(args.data, args.name, args.query, args.label, args.id, args.force, options=_read_options(args))
    data = config.data
    print(f"wrote {path}: {len(data.columns)} feature columns, id {data.id_column or '-'}, label {data.label_column or '-'}"
          + (f", left out: {', '.join(left_out)}" if left_out else ""))
    print(f"review it (its comments say what was guessed), then: pynomaly run --config {path}")
    return 0


def _stage(args) -> int:
    from .stages import STAGES

    result = STAGES[args.name](load_config(args.config))
    print(result.model_dump_json(indent=2))
    return 0


def _detectors(args) -> int:
    from .detectors.registry import REGISTRY

    if args.json:
        print(json.dumps([{"name": name, **spec.tags, "default": spec.default} for name, spec in REGISTRY.items()], indent=2))
    else:
        for name, spec in REGISTRY.items():
            tags = spec.tags
            print(f"{name:<17} backend={tags['backend']:<10} input={tags['input']:<7} gpu={tags['gpu']!s:<5} "
                  f"default={spec.default!s:<5} labels={tags['needs_labels']!s:<5} needs={','.join(tags['python_dependencies'])}")
    return 0


def _score(args) -> int:
    from .config import EngineOptions
    from .scoring import score_with_engine

    engine = EngineOptions(name=args.engine, spark_master=args.spark_master, scheduler=args.scheduler, workers=args.workers)
    report = score_with_engine(engine, args.model, args.input, args.output, batch_rows=args.batch_rows, edges_path=args.edges,
                               options=_read_options(args))
    print(json.dumps(report, indent=2))
    return 0


def _bench(args) -> int:
    import time

    from .selection.bench import against_iforest, comparison_table, run_benchmark, write_report

    started = time.perf_counter()
    config = load_config(args.config) if args.config else None
    train = config.train if config else TrainConfig()
    if args.strategy:
        train = train.model_copy(update={"strategy": args.strategy})
    threshold = config.threshold if config else ThresholdConfig()
    if args.target_fpr is not None:
        try:
            threshold = ThresholdConfig.model_validate(threshold.model_dump() | {"target_fpr": args.target_fpr})
        except ValidationError as err:
            raise ConfigError(f"--target-fpr {args.target_fpr}: {err.errors()[0]['msg']}") from None
    if args.lodo and train.strategy != "meta":
        raise ConfigError(f"--lodo leaves datasets out of the meta-selection knowledge base; train.strategy is {train.strategy}")
    if args.jobs == 0:
        raise ConfigError("--jobs 0: give how many processes run side by side (1 or more; -1 for one per core)")
    if args.labels is not None and (args.labels < 1 or args.label_fraction):
        raise ConfigError(f"--labels {args.labels}: give a count of at least 1 labelled anomaly, or --label-fraction, not both")
    overrides = {"storage": "sqlite:///:memory:", "progress_bar": False, "use_labels": args.label_fraction > 0 or bool(args.labels)}
    if args.n_trials:
        overrides["n_trials"] = args.n_trials
    if args.timeout:
        overrides["timeout"] = args.timeout
    report = run_benchmark(
        args.data_dir, args.label_fraction, args.seeds, train.model_copy(update=overrides), leave_one_out=args.lodo, threshold=threshold,
        label_count=args.labels, jobs=args.jobs,
    )
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_report(report, args.out)
    if report["results"]:
        table = comparison_table(report, args.data_dir / "anchors_aucroc.csv")
        print(table.to_string())
        print(against_iforest(table))
        if "minus_plain_pu" in table:
            print(against_iforest(table, "minus_plain_pu", "the plain PU classifier (ADBench's CatBoost)"))
    print(f"mean AUCROC {report['mean_aucroc']}  ({len(report['errors'])} failed)  wall time {report['wall_seconds']} s  -> {args.out}")
    if threshold.target_fpr is not None and report["results"]:
        gap = report["mean_threshold_fpr"] - threshold.target_fpr
        print(f"mean realised FPR on test normals {report['mean_threshold_fpr']:.4f}  (target {threshold.target_fpr}, gap {gap:+.4f})")
    return 0


def _monitor(args) -> int:
    from .data.io import locate, table_format

    options = _read_options(args)
    locate(args.batch)  # fail before starting a Prefect server
    table_format(args.batch, options)
    _prefect_environment()
    from flows.monitoring import monitoring_flow

    result = monitoring_flow(args.batch, load_config(args.config), options)
    keys = ("drift_detected", "drifted_columns", "score_drift", "alert_rate", "retrain_triggered")
    if args.json:
        print(json.dumps({k: result[k] for k in keys}, indent=2))
    else:
        print(f"drift detected: {result['drift_detected']}; retraining requested: {result['retrain_triggered']}")
        for reason in result["reasons"]:
            print(f"  - {reason}")
        print(f"report: {result['report']}  scored rows: {result['scored']}")
    return 0


def _stream(args) -> int:
    import redis

    from .monitoring.stream import StreamScorer

    config = load_config(args.config)
    try:
        scorer = StreamScorer(config, consumer=args.consumer)
    except redis.ConnectionError as err:
        print(f"pynomaly: error: cannot reach Redis at {config.monitoring.stream.redis_url} ({err}); start it with `make redis`", file=sys.stderr)
        return 2
    print(f"scoring {scorer.options.input} -> {scorer.options.output} as {scorer.options.group}/{scorer.consumer} with {scorer.model_uri}", flush=True)
    try:
        totals = scorer.run(args.max_batches, idle_exit=args.idle_exit, on_batch=lambda b: print(json.dumps(b.__dict__), flush=True))
    except KeyboardInterrupt:
        return 130
    except redis.ConnectionError as err:  # gone for longer than the consumer waits
        print(f"pynomaly: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(totals))
    return 0


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def _serve(args) -> int:
    """Exec uvicorn with MLflow's scoring server (POST /invocations) for the registered model, behind pynomaly_core.scoring.serving."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    from .tracking.champion import champion_uri
    from .tracking.store import store_uri

    if not _loopback(args.host):
        # MLflow's scoring server has no authentication: only this machine may reach it.
        raise ConfigError(f"--host {args.host}: pynomaly serve has no authentication, so it listens on loopback only "
                          "(127.0.0.1, ::1 or localhost); to serve other machines, put an authenticating reverse proxy in front of it")
    config = load_config(args.config)
    model = args.model or champion_uri(config.registry.model_name)
    mlflow.set_tracking_uri(store_uri(config.tracking))
    try:  # what `mlflow models serve` does first
        local_path = mlflow.artifacts.download_artifacts(artifact_uri=model)
    except mlflow.exceptions.MlflowException as err:
        raise DataError(f"cannot load model {model}: {err.message}") from None
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, scoring_server._SERVER_MODEL_PATH: local_path}
    command = [os.path.join(bin_dir, "uvicorn"), "--host", args.host, "--port", str(args.port), "--workers", str(args.workers),
               "pynomaly_core.scoring.serving:app"]
    # Bandit B606: the argv is this environment's own uvicorn with parsed options, run without a shell.
    os.execve(command[0], command, env)  # nosec B606


def _ui(args) -> int:
    """The analysts' workbench (the CLI is the outermost layer, so it may start it)."""
    import uvicorn

    from workbench.app import create_app

    config = load_config(args.config)
    # X-Forwarded-For is believed only from a proxy named here: uvicorn's default trusts loopback, so anyone on the
    # machine could write any client address into the audit log and spread failed logins over made-up addresses.
    proxies = args.trusted_proxies or os.environ.get("PYNOMALY_TRUSTED_PROXIES", "")
    # warm_up: the champion is loaded and its SHAP explainer set up before the server answers.
    uvicorn.run(create_app(config, secure_cookies=args.secure_cookies, warm_up=True), host=args.host, port=args.port, log_level="info",
                proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None,
                timeout_graceful_shutdown=5)  # a SHAP request in flight does not hold up a stop
    return 0


def _users(args) -> int:
    import getpass

    import sqlalchemy as sa

    from workbench import auth
    from workbench.db import USERS, audit, connect, migrate

    from .labels.feedback import database_url

    url = database_url(load_config(args.config))
    migrate(url)
    engine = connect(url)
    if args.action == "list":
        with engine.connect() as connection:
            for name, role in connection.execute(sa.select(USERS.c.name, USERS.c.role).order_by(USERS.c.name)):
                print(f"{name}\t{role}")
        return 0
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("pynomaly: error: the passwords differ", file=sys.stderr)
            return 2
    role = "admin" if args.admin else args.role
    try:
        with engine.begin() as connection:
            name = auth.add_user(connection, args.name, password, role)
            audit(connection, getpass.getuser(), "user_added", f"{name} ({role}) from the command line")
    except auth.AuthError as err:
        print(f"pynomaly: error: {err}", file=sys.stderr)
        return 2
    print(f"added {name} ({role}) to {url.split('@')[-1]}")
    return 0


def _read_options(args) -> ReadOptions:
    sheet = int(args.sheet) if args.sheet is not None and args.sheet.isdigit() else args.sheet
    return ReadOptions(format=args.format, sheet=sheet, key=args.key)


def _add_read_options(parser: argparse.ArgumentParser) -> None:
    """The same choices as data.format, data.sheet and data.key."""
    parser.add_argument("--format", choices=typing.get_args(TableFormat), help="the table's format (default: from the suffix)")
    parser.add_argument("--sheet", help="Excel: the sheet's name or 0-based position (default: the first)")
    parser.add_argument("--key", help="HDF5: the table's key (default: the file's only one)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pynomaly", description="Anomaly detection pipelines with Prefect, MLflow and DVC.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the training flow (Prefect) and print a summary")
    run.add_argument("--config", default=DEFAULT_CONFIG)
    run.add_argument("--result", help="also write the run's summary as JSON to this file")
    run.set_defaults(handler=_run)

    init = commands.add_parser("init", help="write configs/NAME.yaml for a table: column rules inferred, id and label guessed")
    init.add_argument("data", help="a table file (CSV, JSON Lines, Parquet, Feather, ORC, Excel, HDF5), a Parquet folder or glob, or a SQLAlchemy URL with --query")
    init.add_argument("--name", help="config, model and output name (default: the file name without its extension)")
    init.add_argument("--label", help="the 0/1 column where 1 marks an anomaly (default: guessed from the names)")
    init.add_argument("--id", help="the row id column (default: guessed from the names)")
    init.add_argument("--query", help="SQL whose result is the table; DATA is then the database URL")
    init.add_argument("--force", action="store_true", help="overwrite an existing config")
    _add_read_options(init)
    init.set_defaults(handler=_init)

    stage = commands.add_parser("stage", help="run one pipeline stage (what dvc.yaml calls)")
    stage.add_argument("name", choices=["validate", "preprocess", "train", "evaluate", "explain", "register"])
    stage.add_argument("--config", default=DEFAULT_CONFIG)
    stage.set_defaults(handler=_stage)

    detectors = commands.add_parser("detectors", help="list the registered detectors and their tags")
    detectors.add_argument("--json", action="store_true")
    detectors.set_defaults(handler=_detectors)

    score = commands.add_parser("score", help="score a table file (any format `pynomaly init` reads) with a registered model")
    score.add_argument("--model", required=True, help="e.g. models:/breast-cancer-detector@champion")
    score.add_argument("input")
    score.add_argument("output")
    score.add_argument("--batch-rows", type=int, default=BATCH_ROWS, help="rows read, validated and scored at a time")
    score.add_argument("--edges", help="graph models: the edge list of the node table INPUT (CSV or Parquet)")
    score.add_argument("--engine", choices=["pandas", "spark", "dask"], default="pandas",
                       help="pandas: this process, batch by batch (default); spark: a Spark session (MLflow's spark_udf); "
                            "dask: a Dask cluster. spark and dask read Parquet and write OUTPUT as a Parquet folder")
    score.add_argument("--spark-master", default="local[*]", help="--engine spark: the master URL (default local[*])")
    score.add_argument("--scheduler", help="--engine dask: the scheduler's address (default: a local cluster of --workers processes)")
    score.add_argument("--workers", type=int, default=2, help="--engine dask without --scheduler: worker processes of the local cluster")
    _add_read_options(score)
    score.set_defaults(handler=_score)

    bench = commands.add_parser("bench", help="measure model selection on ADBench-style .npz datasets")
    bench.add_argument("data_dir", type=Path)
    bench.add_argument("--label-fraction", type=float, default=0.0, help="share of training anomalies revealed")
    bench.add_argument("--labels", type=int, help="this many training anomalies revealed (a count, as an analyst gives them)")
    bench.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    bench.add_argument("--out", type=Path, default=Path("results.json"))
    bench.add_argument("--config", help="a pipeline config whose train section sets the search (default: the built-in defaults)")
    bench.add_argument("--n-trials", type=int, help="override train.n_trials")
    bench.add_argument("--timeout", type=float, help="override train.timeout, seconds per dataset and seed")
    bench.add_argument("--lodo", action="store_true", help="leave each dataset out of the meta-selection knowledge base (--strategy meta)")
    bench.add_argument("--strategy", choices=["default", "meta", "consensus"], help="override train.strategy")
    bench.add_argument("--target-fpr", type=float, help="override threshold.target_fpr: a conformal threshold for this false-positive rate")
    bench.add_argument("--jobs", type=int, default=1, help="datasets and seeds run side by side in this many processes (-1: one per core)")
    bench.set_defaults(handler=_bench)


    monitor = commands.add_parser("monitor", help="score a batch with the champion, check drift, request retraining when due")
    monitor.add_argument("--config", default=DEFAULT_CONFIG)
    monitor.add_argument("--batch", required=True, help="a table file (or Parquet folder or glob) of new records")
    _add_read_options(monitor)
    monitor.add_argument("--json", action="store_true")
    monitor.set_defaults(handler=_monitor)

    stream = commands.add_parser("stream", help="score a Redis Stream in micro-batches (monitoring.stream settings)")
    stream.add_argument("--config", default=DEFAULT_CONFIG)
    stream.add_argument("--consumer", help="consumer name in the group (default: host-pid)")
    stream.add_argument("--max-batches", type=int)
    stream.add_argument("--idle-exit", action="store_true", help="stop when the stream has nothing to read")
    stream.set_defaults(handler=_stream)

    serve = commands.add_parser("serve", help="serve a registered model over REST (mlflow models serve)")
    serve.add_argument("--model", help="default: models:/<registry.model_name>@champion")
    serve.add_argument("--config", default=DEFAULT_CONFIG)
    serve.add_argument("--host", default="127.0.0.1", help="a loopback address: the server has no authentication")
    serve.add_argument("--port", type=int, default=5056)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(handler=_serve)

    ui = commands.add_parser("ui", help="the analysts' workbench: review flagged rows, label them, manage users and API keys")
    ui.add_argument("--config", default=DEFAULT_CONFIG)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=8050)
    ui.add_argument("--secure-cookies", action="store_true", help="mark cookies Secure (behind HTTPS)")
    ui.add_argument("--trusted-proxies", help="addresses of reverse proxies whose X-Forwarded-For is believed, comma-separated "
                                              "(default: PYNOMALY_TRUSTED_PROXIES, else none)")
    ui.set_defaults(handler=_ui)

    users = commands.add_parser("users", help="workbench accounts: add one (the first admin comes from here) or list them")
    users.add_argument("action", choices=["add", "list"])
    users.add_argument("name", nargs="?")
    users.add_argument("--config", default=DEFAULT_CONFIG)
    role = users.add_mutually_exclusive_group()
    role.add_argument("--admin", action="store_true", help="the admin role: retrains, manages users and keys")
    role.add_argument("--role", choices=["viewer", "analyst", "admin"], default="analyst")
    users.add_argument("--password-stdin", action="store_true", help="read the password from the first line of standard input")
    users.set_defaults(handler=_users)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "users" and args.action == "add" and not args.name:
        parser.error("users add needs a NAME")
    try:
        return args.handler(args)
    except (ConfigError, DataError) as err:
        print(f"pynomaly: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
