#!/usr/bin/env bash
# The production topology on one machine: PostgreSQL databases, an MLflow tracking server,
# a Prefect server, a Prefect worker on a process work pool and the analysts' workbench, all on loopback.
#
#   infra/local/services.sh up [--auth]   # create databases, start and wait for health
#   infra/local/services.sh status
#   infra/local/services.sh down          # stop only what `up` started (PID files)
#
# `up` writes $STATE/env: `source` it to point pynomaly, mlflow and prefect at the servers.
# Settings (environment): MLFLOW_PORT (5055), PREFECT_PORT (4205), PG_HOST, PG_PORT, PG_USER,
# PG_PASSWORD, MLFLOW_DB/PREFECT_DB/OPTUNA_DB/WORKBENCH_DB (each service has its own database: they share
# no migrations), PREFECT_WORK_POOL (pynomaly), PYNOMALY_SERVICES_DIR (.services), WORKBENCH_PORT (8050).
# --auth starts MLflow with `--app-name basic-auth`; it needs MLFLOW_AUTH_ADMIN_PASSWORD.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${PYNOMALY_SERVICES_DIR:-$ROOT/.services}
MLFLOW_PORT=${MLFLOW_PORT:-5055}
PREFECT_PORT=${PREFECT_PORT:-4205}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
MLFLOW_DB=${MLFLOW_DB:-mlflow}
PREFECT_DB=${PREFECT_DB:-prefect}
OPTUNA_DB=${OPTUNA_DB:-optuna}
WORKBENCH_DB=${WORKBENCH_DB:-workbench}
WORKBENCH_PORT=${WORKBENCH_PORT:-8050}
WORK_POOL=${PREFECT_WORK_POOL:-pynomaly}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-180}
STOP_TIMEOUT=${STOP_TIMEOUT:-10}
# Workers stop before the server: a worker whose server is gone hangs on shutdown.
SERVICES_DOWN_ORDER=(workbench worker prefect mlflow)

export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true

die() { echo "services: error: $*" >&2; exit 1; }
log() { echo "services: $*"; }

pg_url() {  # pg_url DRIVER DB; the password comes from the environment, never from a file in git
  local auth=$PG_USER
  [[ -n ${PG_PASSWORD:-} ]] && auth="$PG_USER:$PG_PASSWORD"
  echo "postgresql+$1://$auth@$PG_HOST:$PG_PORT/$2"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_of() { [[ -f $STATE/$1.pid ]] && cat "$STATE/$1.pid"; }

alive() { local state; state=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $state != Z* ]]; }  # a zombie has exited

running() { local pid; pid=$(pid_of "$1") && alive "$pid"; }

need() { command -v "$1" >/dev/null || die "'$1' not found on PATH (activate the project's virtual environment)"; }

start_postgres() {
  if port_open "$PG_PORT"; then return; fi
  if [[ $PG_HOST == 127.0.0.1 || $PG_HOST == localhost ]] && command -v pg_ctlcluster >/dev/null; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    for _ in $(seq 30); do port_open "$PG_PORT" && return; sleep 1; done
  fi
  die "PostgreSQL is not reachable at $PG_HOST:$PG_PORT"
}

create_databases() {
  need psql
  export PGPASSWORD=${PG_PASSWORD:-}
  for db in "$MLFLOW_DB" "$PREFECT_DB" "$OPTUNA_DB" "$WORKBENCH_DB"; do
    if [[ -z $(psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
      psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -qc "CREATE DATABASE \"$db\"" && log "created database $db"
    fi
  done
}

# launch NAME PORT COMMAND...: own process group (setsid) so `down` stops the server's children too.
launch() {
  local name=$1 port=$2; shift 2
  if running "$name"; then log "$name already running (pid $(pid_of "$name"))"; return; fi
  if [[ $port != - ]] && port_open "$port"; then
    die "port $port for $name is already in use by another process; choose another with ${name^^}_PORT"
  fi
  setsid "$@" >"$STATE/$name.log" 2>&1 < /dev/null &
  echo $! >"$STATE/$name.pid"
  log "$name started (pid $!, log $STATE/$name.log)"
}

wait_for() {  # wait_for NAME CHECK-COMMAND...
  local name=$1; shift
  for _ in $(seq "$HEALTH_TIMEOUT"); do
    if ! running "$name"; then
      tail -n 30 "$STATE/$name.log" >&2
      rm -f "$STATE/$name.pid"
      die "$name exited during start-up; log above ($STATE/$name.log)"
    fi
    if "$@" >/dev/null 2>&1; then log "$name healthy"; return; fi
    sleep 1
  done
  die "$name not healthy after ${HEALTH_TIMEOUT}s; see $STATE/$name.log"
}

worker_online() {
  curl -sf -X POST "http://127.0.0.1:$PREFECT_PORT/api/work_pools/$WORK_POOL/workers/filter" \
    -H 'Content-Type: application/json' -d '{}' | grep -q '"status":"ONLINE"'
}

write_env() {
  cat >"$STATE/env" <<EOF
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
export PYNOMALY_OPTUNA_STORAGE=$(pg_url psycopg "$OPTUNA_DB")
export PREFECT_WORK_POOL=$WORK_POOL
export PYNOMALY_DB_URL=$(pg_url psycopg "$WORKBENCH_DB")
export PYNOMALY_PREFECT_UI=http://127.0.0.1:$PREFECT_PORT
EOF
}

up() {
  local auth=false
  [[ ${1:-} == --auth ]] && auth=true
  need mlflow; need prefect; need curl
  # Fail before touching anything when a port is taken by something we did not start.
  running mlflow || ! port_open "$MLFLOW_PORT" || die "port $MLFLOW_PORT for mlflow is already in use by another process; choose another with MLFLOW_PORT"
  running prefect || ! port_open "$PREFECT_PORT" || die "port $PREFECT_PORT for prefect is already in use by another process; choose another with PREFECT_PORT"
  mkdir -p "$STATE/artifacts" "$STATE/prefect-home"
  start_postgres
  create_databases
  write_env

  local mlflow_args=(--backend-store-uri "$(pg_url psycopg "$MLFLOW_DB")" --artifacts-destination "$STATE/artifacts"
    --workers 1 --host 127.0.0.1 --port "$MLFLOW_PORT")
  if $auth; then
    [[ -n ${MLFLOW_AUTH_ADMIN_PASSWORD:-} ]] || die "--auth needs MLFLOW_AUTH_ADMIN_PASSWORD (the admin user's first password)"
    sed "s|^database_uri = .*|database_uri = sqlite:///$STATE/basic_auth.db|" \
      "$(python -c 'import mlflow.server.auth as a, os; print(os.path.dirname(a.__file__))')/basic_auth.ini" >"$STATE/basic_auth.ini"
    export MLFLOW_AUTH_CONFIG_PATH=$STATE/basic_auth.ini
    mlflow_args+=(--app-name basic-auth)
    echo "export MLFLOW_TRACKING_USERNAME=admin  # and MLFLOW_TRACKING_PASSWORD" >>"$STATE/env"
  fi
  launch mlflow "$MLFLOW_PORT" mlflow server "${mlflow_args[@]}"
  PREFECT_HOME=$STATE/prefect-home PREFECT_API_DATABASE_CONNECTION_URL=$(pg_url asyncpg "$PREFECT_DB") \
    launch prefect "$PREFECT_PORT" prefect server start --host 127.0.0.1 --port "$PREFECT_PORT"
  wait_for mlflow curl -sf "http://127.0.0.1:$MLFLOW_PORT/health"
  wait_for prefect curl -sf "http://127.0.0.1:$PREFECT_PORT/api/health"

  # The worker runs flow runs as subprocesses that log to the servers above; ROOT on the path
  # so they import this checkout's packages.
  (
    source "$STATE/env"
    export PREFECT_HOME=$STATE/prefect-home PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
    launch worker - prefect worker start --pool "$WORK_POOL" --type process
  )
  wait_for worker worker_online
  # The workbench reads the same tracking server and triggers the deployments; labels go to WORKBENCH_DB.
  (cd "$ROOT"; source "$STATE/env"; launch workbench "$WORKBENCH_PORT" pynomaly ui --port "$WORKBENCH_PORT")
  wait_for workbench curl -sf "http://127.0.0.1:$WORKBENCH_PORT/healthz"
  log "ready; run: source $STATE/env; workbench: http://127.0.0.1:$WORKBENCH_PORT (first admin: pynomaly users add NAME --admin)"
}

stop() {
  local name=$1 pid
  pid=$(pid_of "$name") || return 0
  if alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq "$STOP_TIMEOUT"); do alive "$pid" || break; sleep 1; done
    # An idle Prefect worker can hang after its interrupt: kill it (and its group) then.
    if alive "$pid"; then
      log "$name did not stop in $STOP_TIMEOUT s; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
      for _ in $(seq 10); do alive "$pid" || break; sleep 1; done
    fi
    log "$name stopped"
  fi
  rm -f "$STATE/$name.pid"
}

down() { for name in "${SERVICES_DOWN_ORDER[@]}"; do stop "$name"; done; }

status() {
  local healthy=0 url
  for name in mlflow prefect worker workbench; do
    case $name in
      workbench) url="curl -sf http://127.0.0.1:$WORKBENCH_PORT/healthz" ;;
      mlflow) url="curl -sf http://127.0.0.1:$MLFLOW_PORT/health" ;;
      prefect) url="curl -sf http://127.0.0.1:$PREFECT_PORT/api/health" ;;
      worker) url=worker_online ;;
    esac
    if ! running "$name"; then echo "$name: stopped"; healthy=1
    elif $url >/dev/null 2>&1; then echo "$name: running (pid $(pid_of "$name")), healthy"
    else echo "$name: running (pid $(pid_of "$name")), not healthy"; healthy=1; fi
  done
  return $healthy
}

case ${1:-} in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up [--auth] | down | status" >&2; exit 2 ;;
esac
