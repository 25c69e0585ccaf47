"""How long the review queue's first page takes to show its SHAP column, as the analyst sees it in Chromium.

    python benchmarks/workbench_shap.py data/raw [--rows 2000] [--pages 4]

DATA_DIR holds breast_cancer.csv. In a scratch folder it trains the demo model as configs/demo.yaml
sets it (meta-selected rank ensemble, label-free), scores a batch of --rows rows drawn from the table
with a little noise, starts `pynomaly ui`, logs in with Debian's Chromium (Playwright) and prints,
for the first page (a fresh server: the queue is built and the model loaded by this request) and
for --pages further pages, the seconds from the navigation's start to the page shown, and to all
of its 25 rows' SHAP features shown.

Side by side in the same run, in this process, on the same 25 rows: SHAP's permutation explainer with
its default batch of 10 masks per model call (what the workbench did) and with a row's masks in one
call (what `pynomaly_core.explain` does now); the values are identical.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.workbench import free_port, start, stop  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "benchmark password"  # nosec B105: a throw-away user in a temporary database


def prepare(data_dir: Path, folder: Path, n_rows: int):
    """The demo model trained and registered in `folder`, and a scored batch of n_rows rows: (batch id, config)."""
    import os
    import shutil

    import pandas as pd
    import yaml

    from pynomaly_core import stages
    from pynomaly_core.monitoring import monitor as monitoring
    from pynomaly_core.config import load_config

    shutil.copytree(data_dir, folder / "data" / "raw")
    os.chdir(folder)
    config = load_config(ROOT / "configs" / "demo.yaml")
    config = config.model_copy(update={"train": config.train.model_copy(update={"progress_bar": False})})
    (folder / "configs").mkdir()
    (folder / "configs" / "demo.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    for name in ("validate", "preprocess", "train", "evaluate", "register"):
        stages.STAGES[name](config)
    table = pd.read_csv(data_dir / "breast_cancer.csv").drop(columns="malignant")
    rng = np.random.default_rng(0)
    batch = table.sample(n_rows, replace=True, random_state=0).reset_index(drop=True)
    features = list(config.data.columns)
    batch[features] = batch[features] * rng.normal(1, 0.02, size=(n_rows, len(features))).clip(0.9, 1.1)
    batch["sample_id"] = np.arange(n_rows)
    batch.to_csv(folder / "batch.csv", index=False)
    monitoring.score_batch(config, "batch.csv")
    return "batch", config


def in_process(config, batch_id: str) -> None:
    """The first page's SHAP values computed here with both batch sizes, timed side by side."""
    import shap

    from pynomaly_core.data.preprocessing import features
    from workbench.review import SHAP_BACKGROUND, Reviewer

    reviewer = Reviewer(config)
    queue = reviewer.queue(batch_id)
    model = reviewer.model(queue.model_uri).unwrap_python_model()
    preprocessor, detector = model.pipeline[0], model.pipeline[-1]
    reference = reviewer.reference(queue.model_uri)
    background = preprocessor.transform(features(reference.sample(min(SHAP_BACKGROUND, len(reference)), random_state=config.seed), config.data))
    rows = preprocessor.transform(features(queue.frame.iloc[queue.order[:25]], config.data))
    max_evals = 2 * (2 * rows.shape[1] + 1)
    print(f"detector: {type(detector).__name__} {getattr(detector, 'name', '')} {getattr(detector, 'params', '')}")
    results = {}
    for label, batch_size in (("SHAP default, 10 masks a call", "auto"), ("a row's masks in one call   ", max_evals)):
        explainer = shap.PermutationExplainer(detector.decision_function, shap.maskers.Independent(background, max_samples=len(background)), seed=0)
        started = time.perf_counter()
        results[label] = explainer(rows, max_evals=max_evals, batch_size=batch_size, silent=True).values
        print(f"  in process, 25 rows: {label}  {time.perf_counter() - started:6.2f} s")
    first, second = results.values()
    print(f"  largest difference between the two: {np.abs(first - second).max():.2e}")


def in_browser(base: str, batch_id: str, pages: int) -> None:
    from playwright.sync_api import sync_playwright

    filled = "document.querySelectorAll('#queue .shap .feature').length > 0 && " \
             "[...document.querySelectorAll('#queue td.shap > span')].every(s => s.textContent.trim() !== '…')"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base}/login")
        page.fill("input[name=name]", "bench")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/batches")
        for number in range(1, pages + 2):
            started = time.perf_counter()
            page.goto(f"{base}/review?batch={batch_id}&page={number}")
            shown = time.perf_counter() - started
            page.wait_for_function(filled, timeout=120_000, polling=20)
            explained = time.perf_counter() - started
            kind = "first page, fresh server" if number == 1 else f"page {number}"
            print(f"  in Chromium, {kind:<24}: page shown {shown:5.2f} s, all 25 rows' SHAP shown {explained:5.2f} s")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--pages", type=int, default=4, help="pages after the first")
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        batch_id, config = prepare(data_dir, folder, args.rows)
        from pynomaly_core.labels.feedback import database_url
        from workbench import auth
        from workbench.db import connect, migrate

        migrate(database_url(config))
        with connect(database_url(config)).begin() as connection:
            auth.add_user(connection, "bench", PASSWORD, "viewer")
        port = free_port()
        ui = start(["ui", "--port", str(port)], folder, f"http://127.0.0.1:{port}/healthz")
        try:
            print(f"review queue of a {args.rows}-row batch scored by the demo model:")
            in_browser(f"http://127.0.0.1:{port}", batch_id, args.pages)
        finally:
            stop(ui)
        in_process(config, batch_id)


if __name__ == "__main__":
    main()
