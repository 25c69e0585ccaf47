"""The `pynomaly` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import ConfigError, load_config
from .io import DataError

DEFAULT_CONFIG = "configs/demo.yaml"


def _run(args) -> int:
    # The CLI is the outermost layer, so it may start the Prefect flow (nothing else imports flows).
    os.environ.setdefault("PREFECT_HOME", str(Path(".prefect").resolve()))
    from flows.training import training_flow

    from .summary import print_summary
    from .tracking import tracking_uri

    config = load_config(args.config)
    print_summary(training_flow(config), tracking_uri(config.tracking))
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
                  f"default={spec.default!s:<5} needs={','.join(tags['python_dependencies'])}")
    return 0


def _score(args) -> int:
    from .scoring import score_file

    report = score_file(args.model, args.input, args.output)
    print(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pynomaly", description="Anomaly detection pipelines with Prefect, MLflow and DVC.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the training flow (Prefect) and print a summary")
    run.add_argument("--config", default=DEFAULT_CONFIG)
    run.set_defaults(handler=_run)

    stage = commands.add_parser("stage", help="run one pipeline stage (what dvc.yaml calls)")
    stage.add_argument("name", choices=["validate", "preprocess", "train", "evaluate", "explain", "register"])
    stage.add_argument("--config", default=DEFAULT_CONFIG)
    stage.set_defaults(handler=_stage)

    detectors = commands.add_parser("detectors", help="list the registered detectors and their tags")
    detectors.add_argument("--json", action="store_true")
    detectors.set_defaults(handler=_detectors)

    score = commands.add_parser("score", help="score a CSV or Parquet file with a registered model")
    score.add_argument("--model", required=True, help="e.g. models:/breast-cancer-detector@champion")
    score.add_argument("input")
    score.add_argument("output")
    score.set_defaults(handler=_score)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, DataError) as err:
        print(f"pynomaly: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
