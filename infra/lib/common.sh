# Shared settings and helpers for infra/stack.sh. Sourced, not run.
# Every value can be overridden from the environment; see infra/README.md.

: "${NPS_CACHE:=$( [ "$(id -u)" = 0 ] && echo /var/cache/nps || echo "${XDG_CACHE_HOME:-$HOME/.cache}/nps" )}"
: "${NPS_BIND:=127.0.0.1}"
: "${NPS_AMQP_PORT:=5682}"
: "${NPS_RABBITMQ_MGMT_PORT:=15682}"
: "${NPS_RABBITMQ_DIST_PORT:=25682}"
: "${NPS_EPMD_PORT:=4379}"
: "${NPS_ES_PORT:=9210}"
: "${NPS_ES_TRANSPORT_PORT:=9310}"
: "${NPS_ES_HEAP:=1g}"
: "${NPS_MINIO_PORT:=9100}"
: "${NPS_MINIO_CONSOLE_PORT:=9101}"
# MinIO's background scanner (usage figures, lifecycle, healing): "default" spends ~11 % of a
# core here all the time on a bucket of 87k objects; NPS uses no lifecycle rules or replication.
: "${NPS_MINIO_SCANNER_SPEED:=slow}"
: "${NPS_PODMAN_SOCKET:=$NPS_CACHE/run/podman.sock}"
# Orthanc (the lab PACS, loopback only) and the NPS DICOM receiver it forwards to.
: "${NPS_ORTHANC_DICOM_PORT:=4252}"
: "${NPS_ORTHANC_HTTP_PORT:=8052}"
: "${NPS_ORTHANC_AET:=ORTHANC}"
: "${NPS_DICOM_PORT:=11112}"
: "${NPS_API_PORT:=8080}"
: "${NPS_WEB_PORT:=8088}"
: "${NPS_DICOM_AET:=NPS}"
# Pinned versions: a second machine builds the same stack.
: "${NPS_ES_VERSION:=8.19.8}"
: "${NPS_MINIO_VERSION:=v0.0.0-20260212201848-7aac2a2c5b7c}"
: "${NPS_MC_VERSION:=latest}"
# The unprivileged account Elasticsearch runs as (it refuses to run as root).
: "${NPS_SERVICE_USER:=nps}"

INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_DIR=$NPS_CACHE/run
BIN_DIR=$NPS_CACHE/bin
LOG_DIR=$NPS_CACHE/log
SECRETS_FILE=$NPS_CACHE/secrets.env
STACK_ENV=$NPS_CACHE/stack.env
export NPS_CACHE

say() { printf '[nps-infra] %s\n' "$*" >&2; }
die() { printf '[nps-infra] error: %s\n' "$*" >&2; exit 1; }

# pid_alive NAME: true when the process recorded in $RUN_DIR/NAME.pid is running.
pid_alive() {
    local f=$RUN_DIR/$1.pid pid
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    kill -0 "$pid" 2>/dev/null
}

# stop_pid NAME: TERM the recorded process, wait up to 30 s, then KILL it.
stop_pid() {
    local f=$RUN_DIR/$1.pid pid i
    if ! pid_alive "$1"; then rm -f "$f"; return 0; fi
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then say "$1 ignored TERM; killing $pid"; kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$f"
}

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds.
wait_until() {
    local limit=$1 what=$2 i; shift 2
    for i in $(seq 1 $((limit * 2))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    return 1
}

http_ok() { curl -fsS --max-time 5 -o /dev/null "$@"; }

random_secret() { head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32; }
minio_access_key() { echo "nps-$(random_secret | head -c 12)"; }

ensure_debs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "missing Debian packages (${missing[*]}); run this once as root"
    say "installing Debian packages: ${missing[*]}"
    # Debian's maintainer scripts would start system-wide services; ours run on their own ports.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# add_secret KEY COMMAND...: append KEY=<output of COMMAND> unless the secrets file has KEY.
# Keys are only ever added, never regenerated: running services use the values already there.
add_secret() {
    local key=$1; shift
    grep -q "^$key=" "$SECRETS_FILE" && return 0
    # A file without a final newline would glue the new line onto its last one.
    if [ -s "$SECRETS_FILE" ] && [ -n "$(tail -c 1 "$SECRETS_FILE")" ]; then echo >> "$SECRETS_FILE"; fi
    echo "$key=$("$@")" >> "$SECRETS_FILE"
}

ensure_secrets() {
    mkdir -p "$NPS_CACHE" "$RUN_DIR" "$BIN_DIR" "$LOG_DIR"
    chmod 755 "$NPS_CACHE"
    [ -s "$SECRETS_FILE" ] || say "generating credentials in $SECRETS_FILE"
    ( umask 077; touch "$SECRETS_FILE" )
    chmod 600 "$SECRETS_FILE"
    add_secret NPS_RABBITMQ_USER echo nps
    add_secret NPS_RABBITMQ_PASSWORD random_secret
    add_secret NPS_MINIO_ACCESS_KEY minio_access_key
    add_secret NPS_MINIO_SECRET_KEY random_secret
    add_secret NPS_ORTHANC_USER echo nps
    add_secret NPS_ORTHANC_PASSWORD random_secret
    add_secret NPS_API_ACCEL_SECRET random_secret
    # shellcheck disable=SC1090
    . "$SECRETS_FILE"
}

# The file the nps CLI, workers and tests read to find the stack (mode 0600).
write_stack_env() {
    ( umask 077
      cat > "$STACK_ENV" <<ENV
# Written by infra/stack.sh up; read by the nps CLI and tests. Do not commit.
NPS_AMQP_URL=amqp://$NPS_RABBITMQ_USER:$NPS_RABBITMQ_PASSWORD@$NPS_BIND:$NPS_AMQP_PORT/%2F
NPS_RABBITMQ_MGMT_URL=http://$NPS_BIND:$NPS_RABBITMQ_MGMT_PORT
NPS_ES_URL=http://$NPS_BIND:$NPS_ES_PORT
NPS_MINIO_ENDPOINT=$NPS_BIND:$NPS_MINIO_PORT
NPS_MINIO_ACCESS_KEY=$NPS_MINIO_ACCESS_KEY
NPS_MINIO_SECRET_KEY=$NPS_MINIO_SECRET_KEY
NPS_DOCKER_HOST=unix://$NPS_PODMAN_SOCKET
NPS_MC=$BIN_DIR/mc
NPS_ORTHANC_URL=http://127.0.0.1:$NPS_ORTHANC_HTTP_PORT
NPS_ORTHANC_USER=$NPS_ORTHANC_USER
NPS_ORTHANC_PASSWORD=$NPS_ORTHANC_PASSWORD
NPS_ORTHANC_DICOM_PORT=$NPS_ORTHANC_DICOM_PORT
NPS_ORTHANC_AET=$NPS_ORTHANC_AET
NPS_DICOM_PORT=$NPS_DICOM_PORT
NPS_DICOM_AET=$NPS_DICOM_AET
NPS_API_ACCEL_SECRET=$NPS_API_ACCEL_SECRET
NPS_WEB_URL=http://$NPS_BIND:$NPS_WEB_PORT
NPS_API_PORT=$NPS_API_PORT
ENV
    )
    chmod 600 "$STACK_ENV"
}
