-- One database per service: MLflow, Prefect and Optuna each run their own migrations.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
CREATE DATABASE optuna;
