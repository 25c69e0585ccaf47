"""Analysts' labels: the labels table and labelled rows for retraining (`feedback`), the order in
which the workbench shows a batch's rows (`discovery`: the likeliest anomalies given every label so
far) and the teach-the-model order it used before (`review`, kept as a benchmark baseline)."""
