"""How long the review queue's first page takes to show its SHAP column, as the analyst sees it in Chromium.

    python benchmarks/workbench_shap.py data/raw [--rows 2000] [--pages 4]

DATA_DIR holds breast_cancer.csv. In a scratch folder it trains the demo model as configs/demo.yaml
sets it, scores a batch of --rows rows drawn from the table
with a little noise, starts `pynomaly ui` (printing how long it took to answer: it loads the champion
and sets up its SHAP explainer first), logs in with Debian's Chromium (Playwright) and prints,
for the first page (a fresh server: the queue is built by this request) and
for --pages further pages, the seconds from the navigation's start to the page shown, and to all
of its 25 rows' SHAP features shown.

Then, in this process, where a fresh server's first page goes, step by step (`in_process`), and the page's
SHAP values side by side: an explainer set up for each call (what the workbench did) and one set up once
per model (what it does now); the values are the same.
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

from benchmarks.workbench import free_port, prepare, start, stop  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "benchmark password"  # nosec B105: a throw-away user in a temporary database


def in_process(config, batch_id: str) -> None:
    """Where a fresh server's first page goes, step by step in a fresh Reviewer here (after `import shap`): the
    model's load and its SHAP explainer's set-up (what `pynomaly ui` now does before it answers), the queue's
    build, then the page's 25 rows explained with an explainer set up for the call (what the workbench did on
    every page) and with the one set up once (what it does now); the values are the same."""
    import shap  # noqa: F401  (imported by the server's warm-up too)

    from pynomaly_core.evaluation import explain
    from pynomaly_core.data.preprocessing import features
    from workbench import review

    reviewer = review.Reviewer(config)
    uri = review.scored_by(config, batch_id)
    steps = {}
    started = time.perf_counter()
    python_model = reviewer.model(uri).unwrap_python_model()
    steps["the model's load (MLflow)"] = time.perf_counter() - started
    started = time.perf_counter()
    explainer = reviewer.explainer(uri)
    steps[f"its SHAP explainer's set-up ({explainer.method})"] = time.perf_counter() - started
    started = time.perf_counter()
    queue = reviewer.queue(batch_id)
    steps["the queue's build (batch read, discovery forest, percentiles)"] = time.perf_counter() - started
    positions = [int(p) for p in queue.ranking()[:25]]
    rows = python_model.pipeline[0].transform(features(queue.frame.iloc[positions], python_model.data_config))
    started = time.perf_counter()
    before = explain.explain(python_model.pipeline[-1], rows, explainer.background, explainer.feature_names).values
    steps["25 rows, explainer set up for the call (before)"] = time.perf_counter() - started
    started = time.perf_counter()
    now = reviewer.shap_values(queue, positions)
    steps["25 rows, explainer set up once (now)"] = time.perf_counter() - started
    print(f"in process, a fresh Reviewer, detector {type(python_model.pipeline[-1]).__name__} {python_model.pipeline[-1].get_params().get('model', '')}:")
    for step, seconds in steps.items():
        print(f"  {step:<64} {seconds:6.2f} s")
    print(f"  largest difference between the two explainers' values: {np.abs(before - now).max():.2e}")


def in_browser(base: str, batch_id: str, pages: int) -> None:
    from playwright.sync_api import sync_playwright

    filled = "document.querySelectorAll('#queue .shap .feature').length > 0 && " \
             "[...document.querySelectorAll('#queue td.shap > span')].every(s => s.textContent.trim() !== '…')"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        # bypass_csp: Playwright's wait_for_function compiles its predicate with eval, which the workbench's CSP forbids.
        page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
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
        batch_id, config, _ = prepare(data_dir, folder, args.rows)
        from pynomaly_core.labels.feedback import database_url
        from workbench import auth
        from workbench.db import connect, migrate

        migrate(database_url(config))
        with connect(database_url(config)).begin() as connection:
            auth.add_user(connection, "bench", PASSWORD, "viewer")
        port = free_port()
        started = time.perf_counter()
        ui = start(["ui", "--port", str(port)], folder, f"http://127.0.0.1:{port}/healthz")
        try:
            print(f"`pynomaly ui` answered /healthz {time.perf_counter() - started:.1f} s after its start (polled every 0.5 s)")
            print(f"review queue of a {args.rows}-row batch scored by the demo model:")
            in_browser(f"http://127.0.0.1:{port}", batch_id, args.pages)
        finally:
            stop(ui)
        in_process(config, batch_id)


if __name__ == "__main__":
    main()
