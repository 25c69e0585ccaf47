-- One database per service: MLflow, Prefect and Optuna each run their own migrations; MLflow keeps its users apart.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
CREATE DATABASE optuna;
CREATE DATABASE mlflow_auth;
