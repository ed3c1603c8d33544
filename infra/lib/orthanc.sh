# Orthanc (Debian `orthanc`, 1.10.1) as the lab's PACS, plus the dcmtk command-line tools.
# Our own Orthanc process, config and database under $NPS_CACHE/orthanc, listening on loopback
# only; it forwards what it receives over DICOM to the NPS receiver (infra/orthanc/autoroute.lua).

ORTHANC_DIR=$NPS_CACHE/orthanc
ORTHANC_CONF=$ORTHANC_DIR/orthanc.json
ORTHANC_SHIM=$BIN_DIR/nps-loopback-bind.so
ORTHANC_HOST=127.0.0.1
# What Debian's init script uses; only looked at to stop a system Orthanc our install started.
ORTHANC_SYSTEM_PIDFILE=/run/orthanc.pid
ORTHANC_POLICY_RC=/usr/sbin/policy-rc.d

# The pid in the system Orthanc's pid file if that process is running (else nothing).
orthanc_system_pid() {
    local pid
    [ -s "$ORTHANC_SYSTEM_PIDFILE" ] || return 0
    pid=$(cat "$ORTHANC_SYSTEM_PIDFILE" 2>/dev/null) || return 0
    case $pid in ''|*[!0-9]*) return 0;; esac
    kill -0 "$pid" 2>/dev/null && echo "$pid"
    return 0
}

# Install packages with a policy-rc.d that forbids starting services, so the orthanc package's
# postinst does not start a system-wide Orthanc (ports 4242/8042). An existing policy-rc.d is
# left alone; ours is removed afterwards whatever happens. The subshell keeps the trap local.
orthanc_install_debs() {
    ( if [ "$(id -u)" = 0 ] && [ ! -e "$ORTHANC_POLICY_RC" ]; then
          trap 'rm -f "$ORTHANC_POLICY_RC"' EXIT
          trap 'exit 130' INT TERM HUP
          printf '#!/bin/sh\n# Temporary, from NPS infra/lib/orthanc.sh: start no services while installing.\nexit 101\n' \
              > "$ORTHANC_POLICY_RC"
          chmod 755 "$ORTHANC_POLICY_RC"
      fi
      ensure_debs "$@" )
}

orthanc_install() {
    local before after
    before=$(orthanc_system_pid)
    orthanc_install_debs orthanc dcmtk curl
    # If the package's init script started Orthanc anyway, stop exactly that process.
    after=$(orthanc_system_pid)
    if [ -n "$after" ] && [ "$after" != "$before" ] \
       && [ "$(readlink "/proc/$after/exe" 2>/dev/null)" = /usr/sbin/Orthanc ]; then
        say "orthanc: stopping the system Orthanc the package started (pid $after)"
        kill -TERM "$after" 2>/dev/null || true
        wait_until 30 "system orthanc exit" eval "! kill -0 $after" || kill -KILL "$after" 2>/dev/null || true
    fi
    if [ "$(id -u)" = 0 ] && ! id "$NPS_SERVICE_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$NPS_SERVICE_USER"
    fi
    # Orthanc 1.10 cannot be told which address to listen on: preload a bind() shim instead.
    local src=$INFRA_DIR/orthanc/loopback_bind.c
    if [ ! -s "$ORTHANC_SHIM" ] || [ "$src" -nt "$ORTHANC_SHIM" ]; then
        command -v gcc >/dev/null || ensure_debs gcc libc6-dev
        mkdir -p "$BIN_DIR"
        gcc -shared -fPIC -O2 -Wall -o "$ORTHANC_SHIM.tmp" "$src" -ldl \
            || die "could not build $ORTHANC_SHIM from $src"
        chmod 755 "$ORTHANC_SHIM.tmp"
        mv -f "$ORTHANC_SHIM.tmp" "$ORTHANC_SHIM"
    fi
}

# Credentials go to curl through stdin (-K -), never on its command line.
orthanc_curl() {
    local path=$1; shift
    if [ -z "${NPS_ORTHANC_PASSWORD:-}" ] && [ -r "$SECRETS_FILE" ]; then
        # shellcheck disable=SC1090
        . "$SECRETS_FILE"
    fi
    printf 'user = "%s:%s"\n' "${NPS_ORTHANC_USER:-}" "${NPS_ORTHANC_PASSWORD:-}" \
        | curl -fsS --max-time 5 -K - "$@" "http://$ORTHANC_HOST:$NPS_ORTHANC_HTTP_PORT$path"
}

orthanc_healthy() { orthanc_curl /system -o /dev/null; }

# Write $ORTHANC_CONF from the template (bash substitution: no sed quoting pitfalls).
orthanc_write_config() {
    local v conf
    for v in "$NPS_ORTHANC_USER" "$NPS_ORTHANC_PASSWORD" "$NPS_ORTHANC_AET" "$NPS_DICOM_AET"; do
        [[ $v =~ ^[A-Za-z0-9._-]+$ ]] || die "orthanc: user, password and AE titles must match [A-Za-z0-9._-]+"
    done
    for v in "$NPS_ORTHANC_HTTP_PORT" "$NPS_ORTHANC_DICOM_PORT" "$NPS_DICOM_PORT"; do
        [[ $v =~ ^[0-9]+$ ]] || die "orthanc: ports must be numbers"
    done
    conf=$(cat "$INFRA_DIR/orthanc/orthanc.json.in")
    conf=${conf//@DB_DIR@/$ORTHANC_DIR/db}
    conf=${conf//@LUA_SCRIPT@/$ORTHANC_DIR/autoroute.lua}
    conf=${conf//@HTTP_PORT@/$NPS_ORTHANC_HTTP_PORT}
    conf=${conf//@HTTP_USER@/$NPS_ORTHANC_USER}
    conf=${conf//@HTTP_PASSWORD@/$NPS_ORTHANC_PASSWORD}
    conf=${conf//@AET@/$NPS_ORTHANC_AET}
    conf=${conf//@DICOM_PORT@/$NPS_ORTHANC_DICOM_PORT}
    conf=${conf//@NPS_AET@/$NPS_DICOM_AET}
    conf=${conf//@NPS_PORT@/$NPS_DICOM_PORT}
    ( umask 077; printf '%s\n' "$conf" > "$ORTHANC_CONF.tmp" )
    cp "$INFRA_DIR/orthanc/autoroute.lua" "$ORTHANC_DIR/autoroute.lua"
    chmod 644 "$ORTHANC_DIR/autoroute.lua"
    if [ "$(id -u)" = 0 ]; then
        # The password is in there: readable by root and the service account only.
        chown "root:$(id -gn "$NPS_SERVICE_USER")" "$ORTHANC_CONF.tmp"
        chmod 640 "$ORTHANC_CONF.tmp"
    fi
    mv -f "$ORTHANC_CONF.tmp" "$ORTHANC_CONF"
}

# True once Orthanc answers, or as soon as its process is gone (so a failed start is not
# waited on for the whole timeout).
orthanc_settled() { ! pid_alive orthanc || orthanc_healthy; }

orthanc_start() {
    if pid_alive orthanc; then
        if wait_until 30 orthanc orthanc_healthy; then
            say "orthanc: running on $ORTHANC_HOST (DICOM $NPS_ORTHANC_DICOM_PORT, HTTP $NPS_ORTHANC_HTTP_PORT)"
            return 0
        fi
        say "orthanc: pid $(cat "$RUN_DIR/orthanc.pid") does not answer; restarting it"
        stop_pid orthanc
    fi
    mkdir -p "$ORTHANC_DIR/db" "$RUN_DIR" "$LOG_DIR"
    orthanc_write_config
    local as_user=()
    if [ "$(id -u)" = 0 ]; then
        chown -R "$NPS_SERVICE_USER" "$ORTHANC_DIR/db"
        chmod 700 "$ORTHANC_DIR/db"
        # setpriv execs (no extra process), so $! below is Orthanc's own pid.
        as_user=(setpriv "--reuid=$NPS_SERVICE_USER" "--regid=$(id -g "$NPS_SERVICE_USER")" --init-groups --)
    fi
    say "orthanc: starting"
    # TCP_NODELAY=1: DCMTK (Orthanc's DICOM layer) then disables Nagle's algorithm; without it
    # every DIMSE message waits ~40 ms for a delayed ACK.
    ( export TCP_NODELAY=1 LD_PRELOAD=$ORTHANC_SHIM HOME=$ORTHANC_DIR
      cd "$ORTHANC_DIR" || exit 1
      setsid nohup "${as_user[@]}" /usr/sbin/Orthanc "$ORTHANC_CONF" \
          >"$LOG_DIR/orthanc.out" 2>&1 < /dev/null &
      echo $! > "$RUN_DIR/orthanc.pid" )
    wait_until 60 orthanc orthanc_settled || true
    if ! { pid_alive orthanc && orthanc_healthy; }; then
        die "orthanc did not become healthy; see $LOG_DIR/orthanc.out"
    fi
    say "orthanc: healthy on $ORTHANC_HOST (DICOM $NPS_ORTHANC_DICOM_PORT, HTTP $NPS_ORTHANC_HTTP_PORT)"
}

orthanc_stop() { stop_pid orthanc; }
