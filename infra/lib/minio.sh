# MinIO server (and its mc client, for benchmarks) built from source with the Go toolchain.

go_build() {  # go_build MODULE VERSION BINARY
    [ -x "$BIN_DIR/$3" ] && return 0
    command -v go >/dev/null || die "Go is needed to build $3 (install Go >= 1.24)"
    say "building $3 from $1@$2 (first run only; takes a few minutes)"
    GOBIN=$BIN_DIR GOFLAGS=-mod=mod go install "$1@$2" || die "go install $1@$2 failed"
}

minio_install() { ensure_debs curl; go_build github.com/minio/minio "$NPS_MINIO_VERSION" minio; }
mc_install() { go_build github.com/minio/mc "$NPS_MC_VERSION" mc; }

minio_healthy() { http_ok "http://$NPS_BIND:$NPS_MINIO_PORT/minio/health/live"; }

minio_start() {
    if pid_alive minio && minio_healthy; then say "minio: running on $NPS_BIND:$NPS_MINIO_PORT"; return 0; fi
    case $NPS_MINIO_SCANNER_SPEED in
        fastest|fast|default|slow|slowest) ;;
        *) die "NPS_MINIO_SCANNER_SPEED must be fastest, fast, default, slow or slowest (not '$NPS_MINIO_SCANNER_SPEED')" ;;
    esac
    mkdir -p "$NPS_CACHE/minio/data"
    say "minio: starting"
    ( export MINIO_ROOT_USER=$NPS_MINIO_ACCESS_KEY MINIO_ROOT_PASSWORD=$NPS_MINIO_SECRET_KEY
      export MINIO_UPDATE=off MINIO_CALLHOME_ENABLE=off MINIO_SCANNER_SPEED=$NPS_MINIO_SCANNER_SPEED
      setsid nohup "$BIN_DIR/minio" server --quiet --anonymous \
          --address "$NPS_BIND:$NPS_MINIO_PORT" --console-address "$NPS_BIND:$NPS_MINIO_CONSOLE_PORT" \
          "$NPS_CACHE/minio/data" >"$LOG_DIR/minio.out" 2>&1 < /dev/null &
      echo $! > "$RUN_DIR/minio.pid" )
    wait_until 60 minio minio_healthy || die "minio did not become healthy; see $LOG_DIR/minio.out"
    say "minio: healthy on $NPS_BIND:$NPS_MINIO_PORT"
}

minio_stop() { stop_pid minio; }
