"""Analysts' labels: the labels table and labelled rows for retraining (`feedback`), the order in
which the workbench shows a batch's rows (`discovery`: the likeliest anomalies given every label so
far), the teach-the-model order it used before (`review`, kept as a named choice and a benchmark
baseline), and how labels and the label-free default combine (`pu`: the rule of the default strategy)."""
