#!/usr/bin/env bash
# The production topology on one machine: PostgreSQL databases, an MLflow tracking server,
# a Prefect server, a Prefect worker on a process work pool and the analysts' workbench, all on loopback.
#
#   infra/local/services.sh up       # create databases and credentials, start and wait for health
#   infra/local/services.sh status
#   infra/local/services.sh down     # stop only what `up` started (PID files)
#   infra/local/services.sh credentials   # only create the credentials file and each role's part (for compose and k8s)
#   infra/local/services.sh backup [DIR]  # the registry and workbench databases (pg_dump), MLflow's users and artifacts
#   infra/local/services.sh restore DIR   # into absent or empty MLFLOW_DB and WORKBENCH_DB and an empty artifact root
#
# Every server asks for credentials. The first `up` writes random ones to $CREDENTIALS (mode
# 0600, outside git): MLflow's admin, a `pipeline` user that writes runs and models, a `reader`
# user that may only read them, and the Prefect server's auth string.
# `up` writes $STATE/env: `source` it to point pynomaly, mlflow and prefect at the servers as the
# pipeline user (it reads the passwords from $CREDENTIALS; it holds none itself).
# PG_PASSWORD, when set, goes to $STATE/pgpass (mode 0600; PGPASSFILE points every client at it), never into
# a URL, a command line or $STATE/env. Everything `up` writes is the owner's only (umask 077, $STATE mode 0700).
# Settings (environment): MLFLOW_PORT (5055), PREFECT_PORT (4205), PG_HOST, PG_PORT, PG_USER,
# PG_PASSWORD, MLFLOW_DB/PREFECT_DB/OPTUNA_DB/WORKBENCH_DB (each service has its own database: they share
# no migrations), PREFECT_WORK_POOL (pynomaly), PYNOMALY_SERVICES_DIR (.services), WORKBENCH_PORT (8050),
# PYNOMALY_CREDENTIALS ($PYNOMALY_SERVICES_DIR/credentials), PREFECT_FLOWS_HEARTBEAT_FREQUENCY (30).
set -euo pipefail
umask 077

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
CREDENTIALS=${PYNOMALY_CREDENTIALS:-$STATE/credentials}
# Flow runs report every HEARTBEAT s; `make deploy`'s automation marks one crashed after 3 silent periods.
HEARTBEAT=${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-30}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-180}
STOP_TIMEOUT=${STOP_TIMEOUT:-10}
# Workers stop before the server: a worker whose server is gone hangs on shutdown.
SERVICES_DOWN_ORDER=(workbench worker prefect mlflow)

export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true

die() { echo "services: error: $*" >&2; exit 1; }
log() { echo "services: $*"; }

pg_url() {  # pg_url DRIVER DB; without the password: libpq (psycopg) and asyncpg read it from PGPASSFILE
  echo "postgresql+$1://$PG_USER@$PG_HOST:$PG_PORT/$2"
}

# The password file of every PostgreSQL client `up` starts (host:port:database:user:password; ':' and '\' escaped),
# only where PG_PASSWORD is set: otherwise libpq's own defaults (~/.pgpass, PGPASSFILE) stay in force.
PGPASS=$STATE/pgpass
use_pgpass() {
  if [[ -z ${PG_PASSWORD:-} ]]; then rm -f "$PGPASS"; return; fi
  local escaped=$PG_PASSWORD
  escaped=${escaped//\\/\\\\}
  escaped=${escaped//:/\\:}
  printf '%s:%s:*:%s:%s\n' "$PG_HOST" "$PG_PORT" "$PG_USER" "$escaped" >"$PGPASS"
  chmod 600 "$PGPASS"  # libpq ignores a password file that others may read
  export PGPASSFILE=$PGPASS
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

# credential NAME: one value of the credentials file.
credential() { sed -n "s/^$1=//p" "$CREDENTIALS"; }

# Random credentials, written once; an existing file is kept (the servers' users depend on it).
create_credentials() {
  if [[ -f $CREDENTIALS ]]; then
    [[ $(stat -c %a "$CREDENTIALS") == 600 ]] || die "$CREDENTIALS may be read by others; chmod 600 it"
    log "credentials: $CREDENTIALS"
  else
    local token='import secrets; print(secrets.token_urlsafe(24))'
    mkdir -p "$(dirname "$CREDENTIALS")"
    (
      umask 077
      cat >"$CREDENTIALS" <<EOF
# Credentials of the pynomaly services, written by infra/local/services.sh; keep this file private.
MLFLOW_ADMIN_USERNAME=admin
MLFLOW_ADMIN_PASSWORD=$(python -c "$token")
MLFLOW_PIPELINE_USERNAME=pipeline
MLFLOW_PIPELINE_PASSWORD=$(python -c "$token")
MLFLOW_READER_USERNAME=reader
MLFLOW_READER_PASSWORD=$(python -c "$token")
MLFLOW_FLASK_SERVER_SECRET_KEY=$(python -c "$token")
PREFECT_AUTH_STRING=admin:$(python -c "$token")
EOF
    )
    log "created credentials (mode 0600): $CREDENTIALS"
  fi
  write_role_credentials
}

# Each container role's part of the credentials, the keys infra/with-credentials.sh reads for it:
# compose and Kubernetes mount $CREDENTIALS.d/ROLE alone, so no container holds another role's passwords.
declare -A ROLE_KEYS=(
  [mlflow-server]="MLFLOW_ADMIN_USERNAME MLFLOW_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_PIPELINE_USERNAME"
  [mlflow-users]="MLFLOW_ADMIN_USERNAME MLFLOW_ADMIN_PASSWORD MLFLOW_PIPELINE_USERNAME MLFLOW_PIPELINE_PASSWORD MLFLOW_READER_USERNAME MLFLOW_READER_PASSWORD"
  [prefect-server]="PREFECT_AUTH_STRING"
  [client]="MLFLOW_PIPELINE_USERNAME MLFLOW_PIPELINE_PASSWORD PREFECT_AUTH_STRING"
  [workbench]="MLFLOW_READER_USERNAME MLFLOW_READER_PASSWORD PREFECT_AUTH_STRING"
)

write_role_credentials() {
  (
    umask 077
    mkdir -p "$CREDENTIALS.d"
    for role in "${!ROLE_KEYS[@]}"; do
      for key in ${ROLE_KEYS[$role]}; do
        grep "^$key=" "$CREDENTIALS" || die "$CREDENTIALS lacks $key"
      done >"$CREDENTIALS.d/$role"
    done
  )
  log "each container role's part: $CREDENTIALS.d/"
}

# MLflow's basic-auth app reads its admin user and its users' database from an ini file.
write_mlflow_auth_config() {
  (
    umask 077
    cat >"$STATE/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = sqlite:///$STATE/basic_auth.db
admin_username = $(credential MLFLOW_ADMIN_USERNAME)
admin_password = $(credential MLFLOW_ADMIN_PASSWORD)
authorization_function = pynomaly_core.tracking.server_auth:authenticate
EOF
  )
}

# curl_auth USER:PASSWORD CURL-ARGS...: basic auth through a config on a pipe, kept off the command line.
curl_auth() {
  local user=$1; shift
  curl -K <(printf 'user = "%s"\n' "$user") "$@"
}

# The pipeline and reader users; every user may read (default_permission), a user may change only
# the experiments and models it created, so the reader cannot move an alias or delete a version; only
# the admin and the pipeline may create experiments and models (pynomaly_core.tracking.server_auth).
create_mlflow_users() {
  local who answer
  for who in MLFLOW_PIPELINE MLFLOW_READER; do
    answer=$(curl_auth "$(credential MLFLOW_ADMIN_USERNAME):$(credential MLFLOW_ADMIN_PASSWORD)" -s -X POST "http://127.0.0.1:$MLFLOW_PORT/api/2.0/mlflow/users/create" \
      -H 'Content-Type: application/json' \
      --data-binary @<(printf '{"username": "%s", "password": "%s"}' "$(credential "${who}_USERNAME")" "$(credential "${who}_PASSWORD")"))
    [[ $answer == *'"user"'* || $answer == *RESOURCE_ALREADY_EXISTS* ]] || die "cannot create MLflow user $(credential "${who}_USERNAME"): $answer"
  done
}

prefect_curl() { curl_auth "$(credential PREFECT_AUTH_STRING)" "$@"; }

worker_online() {
  prefect_curl -sf -X POST "http://127.0.0.1:$PREFECT_PORT/api/work_pools/$WORK_POOL/workers/filter" \
    -H 'Content-Type: application/json' -d '{}' | grep -q '"status":"ONLINE"'
}

# Non-secret settings; the passwords are read from $CREDENTIALS when the file is sourced.
write_env() {
  cat >"$STATE/env" <<EOF
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export MLFLOW_TRACKING_USERNAME=\$(sed -n 's/^MLFLOW_PIPELINE_USERNAME=//p' '$CREDENTIALS')
export MLFLOW_TRACKING_PASSWORD=\$(sed -n 's/^MLFLOW_PIPELINE_PASSWORD=//p' '$CREDENTIALS')
export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
export PREFECT_API_AUTH_STRING=\$(sed -n 's/^PREFECT_AUTH_STRING=//p' '$CREDENTIALS')
$([[ -n ${PG_PASSWORD:-} ]] && echo "export PGPASSFILE=$PGPASS")
export PYNOMALY_OPTUNA_STORAGE=$(pg_url psycopg "$OPTUNA_DB")
export PREFECT_WORK_POOL=$WORK_POOL
export PYNOMALY_DB_URL=$(pg_url psycopg "$WORKBENCH_DB")
export PYNOMALY_PREFECT_UI=http://127.0.0.1:$PREFECT_PORT
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY=$HEARTBEAT
EOF
}

up() {
  need mlflow; need prefect; need curl
  # Fail before touching anything when a port is taken by something we did not start.
  running mlflow || ! port_open "$MLFLOW_PORT" || die "port $MLFLOW_PORT for mlflow is already in use by another process; choose another with MLFLOW_PORT"
  running prefect || ! port_open "$PREFECT_PORT" || die "port $PREFECT_PORT for prefect is already in use by another process; choose another with PREFECT_PORT"
  mkdir -p "$STATE/artifacts" "$STATE/prefect-home"
  chmod 700 "$STATE"  # created before this umask, or by an older `up`: its logs and users' database are the owner's
  start_postgres
  use_pgpass
  create_databases
  create_credentials
  write_mlflow_auth_config
  write_env
  # A shell that sourced $STATE/env holds the pipeline's and Prefect's credentials: the servers get none of them.
  unset MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD PREFECT_API_AUTH_STRING

  MLFLOW_AUTH_CONFIG_PATH=$STATE/basic_auth.ini MLFLOW_FLASK_SERVER_SECRET_KEY=$(credential MLFLOW_FLASK_SERVER_SECRET_KEY) \
    PYNOMALY_MLFLOW_CREATORS=$(credential MLFLOW_ADMIN_USERNAME),$(credential MLFLOW_PIPELINE_USERNAME) PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} \
    launch mlflow "$MLFLOW_PORT" mlflow server --app-name basic-auth --backend-store-uri "$(pg_url psycopg "$MLFLOW_DB")" \
    --artifacts-destination "$STATE/artifacts" --workers 1 --host 127.0.0.1 --port "$MLFLOW_PORT"
  # The UI's browser code calls the API at PREFECT_UI_API_URL (with the auth string it is given): this server's own
  # port, not Prefect's default 4200.
  PREFECT_HOME=$STATE/prefect-home PREFECT_API_DATABASE_CONNECTION_URL=$(pg_url asyncpg "$PREFECT_DB") \
    PREFECT_SERVER_API_AUTH_STRING=$(credential PREFECT_AUTH_STRING) PREFECT_UI_API_URL=http://127.0.0.1:$PREFECT_PORT/api \
    launch prefect "$PREFECT_PORT" prefect server start --host 127.0.0.1 --port "$PREFECT_PORT"
  wait_for mlflow curl -sf "http://127.0.0.1:$MLFLOW_PORT/health"
  wait_for prefect prefect_curl -sf "http://127.0.0.1:$PREFECT_PORT/api/health"
  create_mlflow_users

  # The worker runs flow runs as subprocesses that log to the servers above; ROOT on the path
  # so they import this checkout's packages.
  (
    source "$STATE/env"
    export PREFECT_HOME=$STATE/prefect-home PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
    launch worker - prefect worker start --pool "$WORK_POOL" --type process
  )
  wait_for worker worker_online
  # The workbench reads the tracking server as the read-only user and triggers the deployments;
  # labels go to WORKBENCH_DB.
  (cd "$ROOT"; source "$STATE/env"
   MLFLOW_TRACKING_USERNAME=$(credential MLFLOW_READER_USERNAME)
   MLFLOW_TRACKING_PASSWORD=$(credential MLFLOW_READER_PASSWORD)
   launch workbench "$WORKBENCH_PORT" pynomaly ui --port "$WORKBENCH_PORT")
  wait_for workbench curl -sf "http://127.0.0.1:$WORKBENCH_PORT/healthz"
  log "ready; credentials in $CREDENTIALS; run: source $STATE/env; workbench: http://127.0.0.1:$WORKBENCH_PORT (first admin: pynomaly users add NAME --admin)"
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

# A consistent copy while the servers run: pg_dump takes a snapshot; the artifacts of a version
# are written before the version is, so an artifact without a version is at worst left over.
backup() {
  need pg_dump
  local target=${1:-$STATE/backups/$(date -u +%Y%m%dT%H%M%SZ)}
  [[ ! -e $target ]] || die "$target exists; name a new folder"
  mkdir -p "$target.partial"
  PGPASSWORD=${PG_PASSWORD:-} pg_dump -Fc -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -f "$target.partial/mlflow.dump" "$MLFLOW_DB"
  # The workbench's labels, users, API keys and audit log.
  PGPASSWORD=${PG_PASSWORD:-} pg_dump -Fc -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -f "$target.partial/workbench.dump" "$WORKBENCH_DB"
  tar -C "$STATE" -czf "$target.partial/artifacts.tar.gz" artifacts
  if [[ -f $STATE/basic_auth.db ]]; then
    python -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))' "$STATE/basic_auth.db" "$target.partial/basic_auth.db"
  fi
  mv "$target.partial" "$target"  # a backup folder is complete or absent
  log "backup of $MLFLOW_DB, $WORKBENCH_DB and $STATE/artifacts: $target"
}

# empty_database DB SETTING: create DB when absent; refuse one that holds tables.
empty_database() {
  local psql=(psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -tA)
  if [[ -n $("${psql[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$1'") ]]; then
    [[ $("${psql[@]}" -d "$1" -c "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'") == 0 ]] \
      || die "database $1 is not empty; restore into a new one ($2=...)"
  else
    "${psql[@]}" -d postgres -qc "CREATE DATABASE \"$1\""
  fi
}

restore() {
  need pg_restore
  local source=${1:?usage: restore DIR}
  [[ -f $source/mlflow.dump && -f $source/artifacts.tar.gz ]] || die "$source is not a backup (mlflow.dump, artifacts.tar.gz)"
  running mlflow && die "mlflow is running; stop the services first (make services-down)"
  export PGPASSWORD=${PG_PASSWORD:-}
  empty_database "$MLFLOW_DB" MLFLOW_DB
  [[ ! -f $source/workbench.dump ]] || empty_database "$WORKBENCH_DB" WORKBENCH_DB  # backups before the workbench have none
  [[ -z $(ls -A "$STATE/artifacts" 2>/dev/null) ]] || die "$STATE/artifacts is not empty; restore into a new PYNOMALY_SERVICES_DIR"
  pg_restore --no-owner --exit-on-error -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$MLFLOW_DB" "$source/mlflow.dump"
  if [[ -f $source/workbench.dump ]]; then
    pg_restore --no-owner --exit-on-error -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$WORKBENCH_DB" "$source/workbench.dump"
  fi
  mkdir -p "$STATE"
  tar -C "$STATE" -xzf "$source/artifacts.tar.gz"
  [[ -f $source/basic_auth.db ]] && cp "$source/basic_auth.db" "$STATE/basic_auth.db"
  log "restored $source into databases $MLFLOW_DB and $WORKBENCH_DB and $STATE/artifacts"
}

status() {
  local healthy=0 url
  for name in mlflow prefect worker workbench; do
    case $name in
      workbench) url="curl -sf http://127.0.0.1:$WORKBENCH_PORT/healthz" ;;
      mlflow) url="curl -sf http://127.0.0.1:$MLFLOW_PORT/health" ;;
      prefect) url="prefect_curl -sf http://127.0.0.1:$PREFECT_PORT/api/health" ;;
      worker) url=worker_online ;;
    esac
    if ! running "$name"; then echo "$name: stopped"; healthy=1
    elif $url >/dev/null 2>&1; then echo "$name: running (pid $(pid_of "$name")), healthy"
    else echo "$name: running (pid $(pid_of "$name")), not healthy"; healthy=1; fi
  done
  return $healthy
}

case ${1:-} in
  up) up ;;
  credentials) create_credentials ;;
  backup) shift; backup "$@" ;;
  restore) shift; restore "$@" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up | down | status | credentials | backup [DIR] | restore DIR" >&2; exit 2 ;;
esac
