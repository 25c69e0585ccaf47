-- One database per service: MLflow, Prefect, Optuna and the workbench each run their own migrations.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
CREATE DATABASE optuna;
CREATE DATABASE workbench;
