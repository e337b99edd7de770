#!/usr/bin/env bash
# Start the bma-study MLflow tracking server on this machine (the Ray head), or stop it.
#
#   bash cluster/start_mlflow.sh          # start (idempotent: exits 0 at once if the server already answers)
#   bash cluster/start_mlflow.sh stop     # stop the server this script started (its whole process group)
#   bash cluster/start_mlflow.sh status   # exit 0 if the server answers, 1 if not
#
# The cluster configs run it from head_start_ray_commands. `ray stop` does not touch it, and a second
# `ray up` finds it running and leaves it alone; to change its settings, run `... start_mlflow.sh stop` first.
# `start` returns only once the server answers GET /health, so the trials that follow can log at once.
#
# Settings (environment variables; defaults suit a small cluster):
#   MLFLOW_HOST           interface to bind. 0.0.0.0 (default) so workers can reach it; the cloud firewall /
#                         security group keeps it private, and the UI is reached through an SSH tunnel.
#   MLFLOW_PORT           5000 (default)
#   MLFLOW_STATE_DIR      where the pid file, the log and the default database live: ~/mlflow (default)
#   MLFLOW_BACKEND_URI    run records: sqlite:///$MLFLOW_STATE_DIR/mlflow.db (default; the head's own disk, so
#                         it goes with the head at `ray down`: export first, or for records that outlive the
#                         cluster use postgresql://<YOUR-DB-USER>:<YOUR-DB-PASSWORD>@<YOUR-DB-HOST>:5432/mlflow
#                         after `pip install psycopg2-binary`)
#   MLFLOW_ARTIFACTS      artifact store: $MLFLOW_STATE_DIR/artifacts (default), s3://..., gs://... or an NFS path.
#                         The server proxies artifact traffic (--artifacts-destination), so only this machine
#                         needs credentials for it (boto3 for s3://, google-cloud-storage for gs://).
#   MLFLOW_WORKERS        uvicorn worker processes: 2 (default)
#   MLFLOW_START_TIMEOUT  seconds to wait for the server to answer: 120 (default)
#   MLFLOW_BIN            the mlflow executable: mlflow (default, from PATH)
#   MLFLOW_SERVER_ALLOWED_HOSTS  read by mlflow itself: Host headers it accepts. Its default (localhost and the
#                         private ranges 10.*, 172.16-31.*, 192.168.*) covers cloud VPCs; set it when workers
#                         reach the head by a hostname or a public IP.
# The address workers should use (http://<this machine's IP>:PORT) is printed and written to
# $MLFLOW_STATE_DIR/tracking_uri, so `ray exec CLUSTER.yaml 'cat ~/mlflow/tracking_uri'` gives the value for
# `study/run.py --tracking-uri`.
set -euo pipefail

MLFLOW_HOST="${MLFLOW_HOST:-0.0.0.0}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
MLFLOW_STATE_DIR="${MLFLOW_STATE_DIR:-$HOME/mlflow}"
MLFLOW_BACKEND_URI="${MLFLOW_BACKEND_URI:-sqlite:///$MLFLOW_STATE_DIR/mlflow.db}"
MLFLOW_ARTIFACTS="${MLFLOW_ARTIFACTS:-$MLFLOW_STATE_DIR/artifacts}"
MLFLOW_WORKERS="${MLFLOW_WORKERS:-2}"
MLFLOW_START_TIMEOUT="${MLFLOW_START_TIMEOUT:-120}"
MLFLOW_BIN="${MLFLOW_BIN:-mlflow}"

PID_FILE="$MLFLOW_STATE_DIR/mlflow-server.pid"
LOG_FILE="$MLFLOW_STATE_DIR/mlflow-server.log"
URI_FILE="$MLFLOW_STATE_DIR/tracking_uri"

# Probe the server where this machine can reach it: a wildcard bind answers on loopback.
case "$MLFLOW_HOST" in
    0.0.0.0 | "::" | "") PROBE_HOST=127.0.0.1 ;;
    *) PROBE_HOST="$MLFLOW_HOST" ;;
esac
HEALTH_URL="http://$PROBE_HOST:$MLFLOW_PORT/health"

log() { echo "[start_mlflow] $*" >&2; }

answers() {
    # /health is exempt from MLflow's Host-header check, so it answers whatever the allowed hosts are.
    if command -v curl > /dev/null 2>&1; then
        curl -fsS -m 3 -o /dev/null "$HEALTH_URL" > /dev/null 2>&1
    else
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)' \
            "$HEALTH_URL" > /dev/null 2>&1
    fi
}

running_pid() {
    # The pid in the pid file if that process is alive, else nothing.
    local pid
    [ -f "$PID_FILE" ] || return 1
    pid="$(cat "$PID_FILE" 2> /dev/null || true)"
    [ -n "$pid" ] && kill -0 "$pid" 2> /dev/null && echo "$pid"
}

advertised_uri() {
    # The address other machines use: the IP Ray itself picks for this node (what workers see as
    # $RAY_HEAD_IP), else the first address of `hostname -I`.
    local ip=""
    case "$MLFLOW_HOST" in
        0.0.0.0 | "::" | "")
            ip="$(python3 -c 'import ray.util; print(ray.util.get_node_ip_address())' 2> /dev/null || true)"
            [ -n "$ip" ] || ip="$( (hostname -I 2> /dev/null || true) | awk '{print $1}')"
            [ -n "$ip" ] || ip=127.0.0.1
            ;;
        *) ip="$MLFLOW_HOST" ;;
    esac
    echo "http://$ip:$MLFLOW_PORT"
}

report_ready() {
    local uri
    uri="$(advertised_uri)"
    echo "$uri" > "$URI_FILE"
    log "MLflow server answers on $HEALTH_URL; workers and --tracking-uri use $uri (saved in $URI_FILE)"
}

wait_until_answers() {
    # $1: pid of the server. Fails early if the process dies.
    local pid="$1" deadline=$((SECONDS + MLFLOW_START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if answers; then return 0; fi
        if ! kill -0 "$pid" 2> /dev/null; then
            log "mlflow server (pid $pid) exited before answering; last lines of $LOG_FILE:"
            tail -n 30 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            return 1
        fi
        sleep 1
    done
    log "mlflow server (pid $pid) did not answer $HEALTH_URL within ${MLFLOW_START_TIMEOUT}s; see $LOG_FILE"
    return 1
}

start() {
    mkdir -p "$MLFLOW_STATE_DIR"
    if answers; then
        log "already running"
        report_ready
        return 0
    fi
    local pid
    if pid="$(running_pid)"; then
        # Started by an earlier call and still coming up: wait for it rather than start a second one.
        log "waiting for the server started earlier (pid $pid)"
        wait_until_answers "$pid"
        report_ready
        return 0
    fi
    case "$MLFLOW_ARTIFACTS" in
        *://*) ;;                             # a remote store: nothing to create here
        *) mkdir -p "$MLFLOW_ARTIFACTS" ;;    # a local or NFS path
    esac
    case "$MLFLOW_BACKEND_URI" in
        sqlite:///*) mkdir -p "$(dirname "${MLFLOW_BACKEND_URI#sqlite:///}")" ;;
    esac
    log "starting: $MLFLOW_BIN server --backend-store-uri $MLFLOW_BACKEND_URI --artifacts-destination" \
        "$MLFLOW_ARTIFACTS --host $MLFLOW_HOST --port $MLFLOW_PORT (log: $LOG_FILE)"
    # setsid: its own session and process group (pgid == pid), so it survives the SSH session that
    # `ray up` runs this in, and `stop` can end the server together with its uvicorn workers.
    setsid nohup "$MLFLOW_BIN" server \
        --backend-store-uri "$MLFLOW_BACKEND_URI" \
        --artifacts-destination "$MLFLOW_ARTIFACTS" \
        --host "$MLFLOW_HOST" \
        --port "$MLFLOW_PORT" \
        --workers "$MLFLOW_WORKERS" \
        >> "$LOG_FILE" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$PID_FILE"
    wait_until_answers "$pid"
    report_ready
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        log "no server started by this script is running"
        rm -f "$PID_FILE"
        return 0
    fi
    log "stopping pid $pid and its process group"
    kill -TERM -- "-$pid" 2> /dev/null || kill -TERM "$pid" 2> /dev/null || true
    for _ in $(seq 1 20); do
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.5
    done
    kill -KILL -- "-$pid" 2> /dev/null || true
    rm -f "$PID_FILE"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) answers || exit 1 ;;
    *)
        echo "usage: $0 [start|stop|status]" >&2
        exit 2
        ;;
esac
