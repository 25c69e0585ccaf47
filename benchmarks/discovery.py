"""How many anomalies the analyst finds in the first 25, 50, 100 rows of the review queue.

The protocol of the AAD papers (Das et al., ICDM 2016; TKDD 2020) and of the issue's anchor table:
each dataset's whole table is the batch (a table above --max-rows rows is cut to a seeded, stratified
sample of that size, and the output says so); a simulated analyst answers from the ground truth.
Per dataset and seed it counts the true anomalies among the first B rows shown by:

- static_iforest: a bare scikit-learn IsolationForest (100 trees, 256 rows), highest score first;
- static_model:   the product's label-free model (`train.strategy: meta`, knowledge base without
                  the dataset under test; robust scaling as the pipeline does), highest score first;
- queue:          today's review order of that model (`active.review_order`);
- feedback:       active discovery (`labels.discovery`, AAD on the forest's leaves): the top unlabelled
                  row is shown, answered, the weights updated, the batch re-ranked; one row per round;
- feedback_page:  the same, a page of 25 rows shown and answered per round (as the workbench shows them).

It also reports the ROC-AUC of each method's final scores on the rows still unlabelled after B
answers (rows not shown): does the feedback generalise beyond the rows seen? Every setting of the
feedback is the authors' (their experiment script aad.sh; --settings demo_aad runs their demo's, which
produced the issue's anchor table; see pynomaly_core/labels/discovery.py); nothing is tuned here.

Run:  nice -n 10 .venv/bin/python benchmarks/discovery.py ../shared/benchmarks/adbench --out discovery.json
      [--datasets cardio thyroid] [--seeds 1 2] [--no-product | --product-seeds 1]      (quick runs)
      [--settings demo_aad]                                                             (the anchor's settings)
      benchmarks/discovery.py --report discovery.json [more.json ...]  (tables and targets from saved runs)
The re-ranking speed on a 100,000-row batch: benchmarks/discovery.py --speed [--speed-table donors.parquet --label is_fraud]
      (a synthetic batch; with --speed-table first a batch of a real table through the champion `pynomaly run` gives it)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import RobustScaler

from pynomaly_core.labels.discovery import SETTINGS, Discovery

BUDGETS = (25, 50, 100)
PAGE = 25
MAX_ROWS = 100_000
# The anchor: AAD (ad_examples, demo_aad defaults) on the whole table, B = 100, mean of 5 seeds.
AAD_ANCHOR = {"cardio": 87.6, "mammography": 77.0, "thyroid": 74.6, "annthyroid": 82.2, "pendigits": 85.8, "satellite": 98.2, "satimage-2": 66.2}
STATIC_ANCHOR = {"cardio": 53.4, "mammography": 30.2, "thyroid": 54.8, "annthyroid": 58.6, "pendigits": 37.2, "satellite": 82.4, "satimage-2": 64.2}


def load(path: Path, seed: int, max_rows: int) -> tuple[np.ndarray, np.ndarray, str]:
    with np.load(path) as data:
        X, y = data["X"].astype(np.float64), data["y"].astype(int)
    note = ""
    if len(X) > max_rows:
        keep, _ = train_test_split(np.arange(len(X)), train_size=max_rows, stratify=y, random_state=seed)
        note = f"{path.stem}: {len(X)} rows cut to a stratified sample of {max_rows} (seed {seed}), {int(y[keep].sum())} anomalies"
        X, y = X[np.sort(keep)], y[np.sort(keep)]
    return X, y, note


def unlabelled_auc(scores: np.ndarray, y: np.ndarray, shown: np.ndarray) -> float | None:
    rest = np.ones(len(y), dtype=bool)
    rest[shown] = False
    if len(np.unique(y[rest])) < 2:
        return None
    return round(float(roc_auc_score(y[rest], scores[rest])), 4)


def static_figures(scores: np.ndarray, order: np.ndarray, y: np.ndarray, budgets) -> dict[int, tuple[int, float | None]]:
    return {b: (int(y[order[:b]].sum()), unlabelled_auc(scores, y, order[:b])) for b in budgets}


def feedback_figures(X: np.ndarray, y: np.ndarray, seed: int, budgets, per_round: int, settings: str) -> dict[int, tuple[int, float | None]]:
    """The simulated analyst answers `per_round` rows per round; figures at each budget."""
    discovery = Discovery.fit(X, seed, settings)
    shown: list[int] = []
    figures = {}
    for budget in sorted(budgets):
        while len(shown) < min(budget, len(y)):
            page = discovery.order()[: min(per_round, budget - len(shown))]
            discovery.label({int(row): int(y[row]) for row in page})
            shown.extend(int(row) for row in page)
        figures[budget] = (int(y[shown].sum()), unlabelled_auc(discovery.scores, y, np.array(shown)))
    return figures


def product_model(X: np.ndarray, seed: int):
    """The product's label-free model on the robust-scaled batch, its knowledge base without this dataset."""
    from pynomaly_core.selection import metaselect
    from pynomaly_core.config import ThresholdConfig, TrainConfig
    from pynomaly_core.selection import make_selector

    kb = metaselect.without_rows_of(X)[0]
    train = TrainConfig().model_copy(update={"storage": "sqlite:///:memory:", "progress_bar": False})
    X_scaled = RobustScaler().fit_transform(X)
    model = make_selector(train, ThresholdConfig(), seed, study_name=f"discovery-{seed}", knowledge_base=kb).select(X_scaled).model
    return model, X_scaled


def run_one(X: np.ndarray, y: np.ndarray, seed: int, budgets, with_product: bool, settings: str) -> dict[str, dict[int, tuple[int, float | None]]]:
    out = {}
    forest = IsolationForest(n_estimators=100, max_samples=min(256, len(X)), random_state=seed).fit(X)
    scores = -forest.score_samples(X)
    out["static_iforest"] = static_figures(scores, np.argsort(-scores, kind="stable"), y, budgets)
    if with_product:
        from pynomaly_core.labels.review import member_scores, review_order

        model, X_scaled = product_model(X, seed)
        scores = model.decision_function(X_scaled)
        out["static_model"] = static_figures(scores, np.argsort(-scores, kind="stable"), y, budgets)
        out["queue"] = static_figures(scores, review_order(scores, member_scores(model, X_scaled), model.threshold_), y, budgets)
    suffix = "" if settings == "aad.sh" else f"_{settings}"  # the product's settings keep the method names
    out[f"feedback{suffix}"] = feedback_figures(X, y, seed, budgets, 1, settings)
    out[f"feedback_page{suffix}"] = feedback_figures(X, y, seed, budgets, PAGE, settings)
    return out


def run(args) -> None:
    paths = sorted(args.data_dir.glob("*.npz"), key=lambda p: p.stem.lower())
    paths = [p for p in paths if (not args.datasets or p.stem in args.datasets) and p.stem not in args.exclude]
    if not paths:
        raise SystemExit(f"no .npz dataset to run in {args.data_dir}")
    results, aucs, notes = [], [], []
    for path in paths:
        for seed in args.seeds:
            started = time.perf_counter()
            X, y, note = load(path, seed, args.max_rows)
            if note:
                print(note, flush=True)
                notes.append(note)
            with_product = not args.no_product and (args.product_seeds is None or seed in args.product_seeds)
            figures = run_one(X, y, seed, args.budgets, with_product, args.settings)
            for method, by_budget in figures.items():
                for budget, (found, auc) in by_budget.items():
                    results.append({"dataset": path.stem, "seed": seed, "method": method, "budget": budget, "found": found,
                                    "possible": int(min(budget, y.sum()))})
                    aucs.append({"dataset": path.stem, "seed": seed, "method": method, "budget": budget, "auc_unlabelled": auc})
            at = max(args.budgets)
            print(f"{path.stem} seed {seed} ({time.perf_counter() - started:.0f} s), found at B={at}: "
                  + ", ".join(f"{m} {f[at][0]}" for m, f in figures.items()), flush=True)
            if args.out:
                args.out.write_text(json.dumps({"results": results, "auc_unlabelled": aucs, "notes": notes}, indent=1))
    report([{"results": results, "auc_unlabelled": aucs, "notes": notes}])


def report(runs: list[dict]) -> None:
    """Per dataset: mean found over seeds per method and budget, the unlabelled ROC-AUC, and the issue's targets."""
    found = pd.DataFrame([r for run in runs for r in run["results"]]).drop_duplicates(["dataset", "seed", "method", "budget"], keep="last")
    auc = pd.DataFrame([r for run in runs for r in run.get("auc_unlabelled", [])]).drop_duplicates(["dataset", "seed", "method", "budget"], keep="last")
    for note in sorted({n for run in runs for n in run.get("notes", [])}):
        print(note)
    seeds = found.groupby("dataset")["seed"].nunique()
    table = found.pivot_table(index=["dataset", "budget"], columns="method", values="found", aggfunc="mean").round(1)
    table["possible"] = found.groupby(["dataset", "budget"])["possible"].first()
    table["seeds"] = table.index.get_level_values(0).map(seeds)
    print("anomalies found among the first B rows (mean over seeds)")
    print(table.to_string())
    if len(auc):
        print("\nROC-AUC on the rows still unlabelled after B answers (mean over seeds)")
        print(auc.pivot_table(index=["dataset", "budget"], columns="method", values="auc_unlabelled", aggfunc="mean").round(3).to_string())
    targets(table)


def targets(table: pd.DataFrame, budget: int = 100) -> None:
    at = table.xs(budget, level="budget")
    if "static_iforest" not in at:
        return
    hard = at["static_iforest"] < 0.8 * at["possible"]
    counted = hard & (at["static_iforest"] > 0)  # where static finds none the ratio is undefined
    for method in [m for m in at.columns if m in ("feedback", "feedback_demo_aad")]:
        ratio = at[method] / at["static_iforest"]
        print(f"\nB = {budget}: {method} / static_iforest per dataset")
        print(pd.DataFrame({"static_iforest": at["static_iforest"], method: at[method], "ratio": ratio.round(3),
                            "static_found_<80%": hard}).to_string())
        if counted.any():
            print(f"geometric mean ratio over the {int(counted.sum())} sets where static finds some but < 80 % of the possible: "
                  f"{float(np.exp(np.log(ratio[counted].clip(lower=1e-9)).mean())):.3f}; worst {ratio[counted].idxmin()} {ratio[counted].min():.3f}"
                  + (f"; left out, static finds none: {', '.join(at.index[hard & ~counted])}" if (hard & ~counted).any() else ""))
        if (~hard).any():
            worst = ratio[~hard].idxmin()
            print(f"on the other {int((~hard).sum())} sets the worst is {worst}: {100 * (ratio[worst] - 1):+.1f} % against static")
        for name, anchor in AAD_ANCHOR.items():
            if name in at.index:
                print(f"{name}: {method} {at.loc[name, method]:.1f} against AAD's {anchor} ({100 * (at.loc[name, method] / anchor - 1):+.1f} %; "
                      f"static IForest here {at.loc[name, 'static_iforest']:.1f}, anchor {STATIC_ANCHOR[name]})")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_answers(X: np.ndarray, truth, seed: int, settings: str, answers: int) -> None:
    """Fit the batch's discovery state, then answer its top row `answers` times (`truth(row)`: 1 anomaly, 0 normal),
    timing each answer to the re-ranked queue; wall and the process's CPU time (what a shared machine does not
    inflate), and the process's peak RSS before and after. Run it on one core (taskset -c 0, OMP_NUM_THREADS=1)."""
    rss = peak_rss_mib()
    started, cpu = time.perf_counter(), time.process_time()
    state = Discovery.fit(X, seed, settings)
    print(f"{settings}: {len(X)} rows x {X.shape[1]} features: forest and leaf table in {time.perf_counter() - started:.2f} s wall, "
          f"{time.process_time() - cpu:.2f} s CPU (once per batch); leaf table {state.leaves.nbytes / 2**20:.0f} MiB")
    state.label({int(state.order()[-1]): 0})  # the first update compiles the optimiser (numba, cached on disk)
    walls, cpus = [], []
    for _ in range(answers):
        top = int(state.order()[0])
        started, cpu = time.perf_counter(), time.process_time()
        state.label({top: truth(top)})
        state.order()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    for name, values in (("wall", walls), ("CPU", cpus)):
        print(f"answer -> re-ranked queue, {answers} answers ({len(state.labels)} labels at the end, "
              f"{sum(state.labels.values())} anomalies), {name}: "
              f"median {np.median(values):.3f} s, 90th percentile {np.percentile(values, 90):.3f} s, max {max(values):.3f} s")
    print(f"peak RSS {rss:.0f} MiB before the batch's discovery state, {peak_rss_mib():.0f} MiB after {answers} answers")


def speed(settings: str, rows: int = 100_000, features: int = 20, seed: int = 0, answers: int = 100) -> None:
    """Seconds from an answer to the re-ranked queue of a synthetic `rows`-row batch."""
    X = np.random.default_rng(seed).normal(size=(rows, features))
    X[:500] += 4  # a cluster of anomalies, so the answers are of both kinds
    print("synthetic batch, normal rows and a cluster of 500 shifted ones")
    time_answers(X, lambda row: int(row < 500), seed, settings, answers)


def speed_on_table(table: Path, label: str, settings: str, rows: int = 100_000, seed: int = 0, answers: int = 100) -> None:
    """The queue a user gets on their own table: `pynomaly init TABLE --label LABEL` and `pynomaly run` in a fresh
    folder (the default champion), then, as the workbench does, the champion's preprocessor on a seeded batch of
    `rows` rows of the table and discovery on it; the label column answers."""
    import mlflow

    from champion import train_champion  # benchmarks/champion.py
    from pynomaly_core.config import load_config
    from pynomaly_core.data.preprocessing import features
    from pynomaly_core.tracking.store import setup

    folder = Path(tempfile.mkdtemp(prefix="pynomaly-discovery-")) / "project"
    run, config_path = train_champion(table.resolve(), label, folder)
    os.chdir(folder)
    config = load_config(config_path)
    setup(config.tracking)
    python_model = mlflow.pyfunc.load_model(f"models:/{config.registry.model_name}@champion").unwrap_python_model()
    frame = pd.read_parquet(table.resolve())
    batch = frame.sample(min(rows, len(frame)), random_state=seed)
    X = python_model.pipeline[0].transform(features(batch, python_model.data_config))
    y = batch[label].to_numpy()
    print(f"{table.name}: champion {json.loads(Path(config.paths.training).read_text())['detector']} "
          f"(pynomaly run {run['seconds']} s, peak RSS {run['peak_rss_mib']} MiB); a batch of {len(batch):,} of its "
          f"{len(frame):,} rows, {int(y.sum())} anomalies, through the champion's preprocessor")
    time_answers(X, lambda row: int(y[row]), seed, settings, answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, nargs="?", help="folder of ADBench <name>.npz files")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--datasets", nargs="+", help="only these datasets (file names without .npz)")
    parser.add_argument("--exclude", nargs="+", default=[], help="leave these datasets out")
    parser.add_argument("--max-rows", type=int, default=MAX_ROWS)
    parser.add_argument("--no-product", action="store_true", help="skip the product's model and today's queue (the slow part)")
    parser.add_argument("--product-seeds", type=int, nargs="+", help="run the product's model and today's queue on these seeds only")
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="aad.sh",
                        help="AAD's settings: the authors' experiment script (the product's) or their demo's (the issue's anchor; "
                             "methods then named feedback_demo_aad, feedback_page_demo_aad)")
    parser.add_argument("--out", type=Path, help="write every figure as JSON")
    parser.add_argument("--report", type=Path, nargs="+", help="print the tables of saved --out files instead of running")
    parser.add_argument("--speed", action="store_true", help="time one answer's re-ranking of a 100,000-row batch")
    parser.add_argument("--speed-table", type=Path, help="with --speed: also on a 100,000-row batch of this Parquet table, "
                                                          "through the champion `pynomaly init` + `pynomaly run` give it")
    parser.add_argument("--label", default="is_fraud", help="the --speed-table's 0/1 label column")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.speed:
        if args.speed_table:
            speed_on_table(args.speed_table, args.label, args.settings)
        speed(args.settings)
    elif args.report:
        report([json.loads(path.read_text()) for path in args.report])
    elif args.data_dir is None:
        parser.error("give DATA_DIR, --report FILE or --speed")
    else:
        run(args)


if __name__ == "__main__":
    main()
