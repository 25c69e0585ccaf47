-- One database per service: MLflow, Prefect, Optuna and the workbench each run their own migrations; MLflow keeps its users apart.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
CREATE DATABASE optuna;
CREATE DATABASE mlflow_auth;
CREATE DATABASE workbench;
