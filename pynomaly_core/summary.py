"""What a training run produced, in one object: printed by the CLI, shown as a Prefect artifact."""

from __future__ import annotations

from pydantic import BaseModel

from .tracking.store import browse_command
from .stages import EvaluateResult, ExplainResult, PreprocessResult, RegisterResult, TrainResult, ValidateResult


class TrainingSummary(BaseModel):
    validation: ValidateResult
    preprocessing: PreprocessResult
    training: TrainResult
    evaluation: EvaluateResult
    explanation: ExplainResult
    registration: RegisterResult

    def rows(self) -> list[tuple[str, str]]:
        metrics = self.evaluation.metrics
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.training.params.items())
        rows = [
            ("rows valid / rejected", f"{self.validation.n_valid} / {self.validation.n_rejected}  (quarantine: {self.validation.quarantine})"),
            ("best detector", f"{self.training.detector}({params})"),
            ("selection", self._selection()),
            ("labels that trained it", self._labels()),
        ]
        for name in ("roc_auc", "pr_auc", "precision_at_n", "f1", "false_positive_rate", "alert_rate", "threshold"):
            if name in metrics:
                rows.append((name, f"{metrics[name]:.4f}"))
        gate = f"{self.registration.gate_metric} {self.registration.gate_value:.4f}"
        if self.registration.previous_champion:
            gate += f" vs champion v{self.registration.previous_champion} {self.registration.previous_value:.4f}"
        rows.append(("model", f"{self.registration.model_name} v{self.registration.version} @{', @'.join(self.registration.aliases)}  ({gate})"))
        if self.registration.model_size_mb is not None:
            rows.append(("model size", f"{self.registration.model_size_mb:.1f} MB" + (f" — {self.registration.model_size_warning}" if self.registration.model_size_warning else "")))
        for row in self.explanation.rows[:3]:
            top = ", ".join(f"{f['feature']} (+{f['contribution']:.3g})" for f in row["top_features"])
            rows.append((f"anomaly id={row['id']} score={row['score']:.4g}", top))
        rows.append(("MLflow run", self.training.run_id))
        return rows

    def _selection(self) -> str:
        score = f"{self.training.criterion} = {self.training.selection_score:.4f}"
        if self.training.n_trials == 0:
            return f"{score} (meta-learned ranking, no search)"
        return f"{score} over {self.training.n_trials} trials ({self.training.n_pruned} pruned)"

    def _labels(self) -> str:
        training = self.training
        if training.n_labels == 0:
            return "none (unsupervised selection)"
        held_out = f"; {training.n_labels_held_out} more on test rows, held out for evaluation" if training.n_labels_held_out else ""
        return f"{training.n_labels} ({training.labels_from}{held_out})"

    def markdown(self) -> str:
        lines = ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in self.rows()]]
        return "\n".join(lines)


def print_summary(summary: TrainingSummary, tracking_uri: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Pynomaly training run", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary.rows():
        table.add_row(key, value)
    console = Console()
    console.print(table)
    console.print(f"Browse runs and models:  {browse_command(tracking_uri)}", soft_wrap=True)
