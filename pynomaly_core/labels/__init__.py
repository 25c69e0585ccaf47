"""Analysts' labels: the labels table and labelled rows for retraining (`feedback`), the order
in which the workbench shows a batch's rows for review (`review`), and how labels and the
label-free default combine (`pu`: the rule of the default strategy)."""
