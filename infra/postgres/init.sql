-- One database per service: MLflow, Prefect, Optuna and the workbench each run their own migrations; MLflow keeps its users apart.
-- psql runs this before the services start, every time: each database is created where it is missing, so one that a
-- later release adds is created on an existing volume too (PostgreSQL's entrypoint runs its init scripts on an empty one only).
SELECT format('CREATE DATABASE %I', name)
FROM unnest(ARRAY['mlflow', 'prefect', 'optuna', 'mlflow_auth', 'workbench']) AS name
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = name)\gexec
