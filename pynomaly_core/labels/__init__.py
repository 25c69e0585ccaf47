"""Analysts' labels: the labels table and labelled rows for retraining (`feedback`), and the order
in which the workbench shows a batch's rows for review (`review`)."""
