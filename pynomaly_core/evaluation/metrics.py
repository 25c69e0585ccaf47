"""Metrics and plots on the held-out test rows."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score, roc_curve


def metrics(scores: np.ndarray, threshold: float, labels: np.ndarray | None) -> dict[str, float]:
    flagged = scores > threshold
    result = {"alert_rate": float(flagged.mean()), "threshold": float(threshold), "n_rows": int(len(scores))}
    if labels is None:
        return result
    labels = np.asarray(labels, dtype=int)
    n_anomalies = int(labels.sum())
    top_n = np.argsort(-scores, kind="stable")[:n_anomalies]
    normals = labels == 0
    result.update(
        roc_auc=float(roc_auc_score(labels, scores)),
        pr_auc=float(average_precision_score(labels, scores)),
        precision_at_n=float(labels[top_n].mean()),
        f1=float(f1_score(labels, flagged)),
        recall=float(flagged[labels == 1].mean()),
        false_positive_rate=float(flagged[normals].mean()),
        n_anomalies=n_anomalies,
    )
    return result


def curves(scores: np.ndarray, labels: np.ndarray) -> dict[str, pd.DataFrame]:
    """ROC and PR curves as tables, the form DVC plots read."""
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    return {
        "roc": pd.DataFrame({"fpr": fpr, "tpr": tpr}),
        "pr": pd.DataFrame({"recall": recall, "precision": precision}),
    }


def plot_histogram(scores: np.ndarray, threshold: float, labels: np.ndarray | None, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.histogram_bin_edges(scores, bins=40)
    if labels is None:
        ax.hist(scores, bins=bins, color="tab:blue")
    else:
        ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="normal")
        ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="anomaly", color="tab:red")
        ax.legend()
    ax.axvline(threshold, color="black", linestyle="--", label="threshold")
    ax.set(xlabel="anomaly score (higher = more anomalous)", ylabel="rows", title="Test score distribution")
    return _save(fig, path)


def plot_curve(table: pd.DataFrame, x: str, y: str, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(table[x], table[y])
    ax.set(xlabel=x, ylabel=y, title=title, xlim=(0, 1), ylim=(0, 1.02))
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
