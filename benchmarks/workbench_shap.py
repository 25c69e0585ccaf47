"""How long the review queue's first page takes to show its SHAP column, as the analyst sees it in Chromium.

    python benchmarks/workbench_shap.py data/raw [--rows 2000] [--pages 4]

DATA_DIR holds breast_cancer.csv. In a scratch folder it trains the demo model as configs/demo.yaml
sets it, scores a batch of --rows rows drawn from the table
with a little noise, starts `pynomaly ui`, logs in with Debian's Chromium (Playwright) and prints,
for the first page (a fresh server: the queue is built and the model loaded by this request) and
for --pages further pages, the seconds from the navigation's start to the page shown, and to all
of its 25 rows' SHAP features shown.

Side by side in the same run, in this process, on the same 25 rows (after numba has compiled SHAP's
masking): native libraries' threads as they come (what the workbench did), the same with a row's masks
in one model call, and one native thread (what the workbench does now); the values are the same.
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
    """The first page's SHAP values computed here, timed side by side after a warm-up (numba compiled): with native
    libraries' threads as they come (as the workbench computed them before), also with a row's masks in one model
    call, and held to one thread (threadpoolctl), as the workbench does now. The values are the same."""
    import shap

    from pynomaly_core.evaluation.explain import warm_up
    from workbench import review

    reviewer = review.Reviewer(config)
    queue = reviewer.queue(batch_id)
    positions = [int(p) for p in queue.order[:25]]
    detector = reviewer.model(queue.model_uri).unwrap_python_model().pipeline[-1]
    print(f"detector: {type(detector).__name__} {getattr(detector, 'members', '')}")
    started = time.perf_counter()
    warm_up()
    print(f"  in process, numba compiling SHAP's masking (explain.warm_up): {time.perf_counter() - started:6.2f} s")
    call, values = shap.PermutationExplainer.__call__, {}
    limits = review.threadpool_limits
    for label, one_call, threads in (("native threads as they come, SHAP's batches of 10 masks", False, None),
                                     ("native threads as they come, a row's masks in one call ", True, None),
                                     ("one native thread (the workbench), SHAP's batches       ", False, 1)):
        if one_call:
            shap.PermutationExplainer.__call__ = lambda self, *a, **k: call(self, *a, **{**k, "batch_size": k["max_evals"]})
        review.threadpool_limits = lambda _: limits(threads)  # the workbench's own limit, replaced to compare
        started = time.perf_counter()
        try:
            values[label] = reviewer.shap_values(queue, positions)
        finally:
            shap.PermutationExplainer.__call__, review.threadpool_limits = call, limits
        print(f"  in process, 25 rows: {label}  {time.perf_counter() - started:6.2f} s")
    first, *others = values.values()
    print(f"  largest difference from the first: {max(np.abs(first - other).max() for other in others):.2e}")


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
        batch_id, config, _ = prepare(data_dir, folder, args.rows)
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
