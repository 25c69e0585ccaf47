#!/bin/sh
# Run a container's command with the credentials its role needs, read from the secret Docker or
# Kubernetes mounts: the role's part of the KEY=value file `make services` creates (credentials.d/ROLE),
# or that whole file:
#   with-credentials mlflow-server|prefect-server|client|workbench|mlflow-users [COMMAND...]
# mlflow-server also needs MLFLOW_AUTH_DATABASE_URI (where MLflow keeps its users) and MLFLOW_BACKEND_STORE_URI;
# a URL with the database password goes in the environment, never on a command line (`ps` shows those to everyone).
set -eu
file=${PYNOMALY_CREDENTIALS:-/run/secrets/credentials}
[ -r "$file" ] || { echo "with-credentials: cannot read the credentials file $file" >&2; exit 1; }
value() { sed -n "s/^$1=//p" "$file"; }
role=$1; shift
case $role in
  mlflow-server)
    ini=$(mktemp)  # mode 0600: it holds the admin password
    cat >"$ini" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI}
admin_username = $(value MLFLOW_ADMIN_USERNAME)
admin_password = $(value MLFLOW_ADMIN_PASSWORD)
authorization_function = pynomaly_core.tracking.server_auth:authenticate
INI
    export MLFLOW_AUTH_CONFIG_PATH="$ini" MLFLOW_FLASK_SERVER_SECRET_KEY="$(value MLFLOW_FLASK_SERVER_SECRET_KEY)"
    # Only these may create experiments and registered models (pynomaly_core/tracking/server_auth.py).
    export PYNOMALY_MLFLOW_CREATORS="$(value MLFLOW_ADMIN_USERNAME),$(value MLFLOW_PIPELINE_USERNAME)"
    ;;
  prefect-server)
    export PREFECT_SERVER_API_AUTH_STRING="$(value PREFECT_AUTH_STRING)"
    ;;
  client)  # workers, Dask workers, one-off commands: the pipeline user
    export MLFLOW_TRACKING_USERNAME="$(value MLFLOW_PIPELINE_USERNAME)" MLFLOW_TRACKING_PASSWORD="$(value MLFLOW_PIPELINE_PASSWORD)"
    export PREFECT_API_AUTH_STRING="$(value PREFECT_AUTH_STRING)"
    ;;
  workbench)  # reads runs and models as the reader user; triggers the training deployment
    export MLFLOW_TRACKING_USERNAME="$(value MLFLOW_READER_USERNAME)" MLFLOW_TRACKING_PASSWORD="$(value MLFLOW_READER_PASSWORD)"
    export PREFECT_API_AUTH_STRING="$(value PREFECT_AUTH_STRING)"
    ;;
  mlflow-users)  # once, after the MLflow server is up: create the pipeline and reader users
    export MLFLOW_TRACKING_USERNAME="$(value MLFLOW_ADMIN_USERNAME)" MLFLOW_TRACKING_PASSWORD="$(value MLFLOW_ADMIN_PASSWORD)"
    export PIPELINE="$(value MLFLOW_PIPELINE_USERNAME):$(value MLFLOW_PIPELINE_PASSWORD)" READER="$(value MLFLOW_READER_USERNAME):$(value MLFLOW_READER_PASSWORD)"
    exec python -c '
import os
from mlflow.exceptions import RestException
from mlflow.server import get_app_client

client = get_app_client("basic-auth", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
for user in (os.environ["PIPELINE"], os.environ["READER"]):
    name, password = user.split(":", 1)
    try:
        client.create_user(name, password)
        print("created MLflow user", name)
    except RestException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
'
    ;;
  *) echo "with-credentials: unknown role $role" >&2; exit 2 ;;
esac
exec "$@"
