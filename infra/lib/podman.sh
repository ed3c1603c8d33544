# Podman with runc, serving the Docker-compatible API on a unix socket.

podman_install() { ensure_debs podman runc uidmap slirp4netns fuse-overlayfs busybox-static curl; }

podman_healthy() { [ -S "$NPS_PODMAN_SOCKET" ] && curl -fsS --max-time 5 --unix-socket "$NPS_PODMAN_SOCKET" http://d/_ping | grep -q OK; }

podman_start() {
    if pid_alive podman && podman_healthy; then say "podman: API on $NPS_PODMAN_SOCKET"; return 0; fi
    mkdir -p "$(dirname "$NPS_PODMAN_SOCKET")"
    rm -f "$NPS_PODMAN_SOCKET"
    say "podman: starting API service"
    # Started in its run folder: conmon writes an empty `oom` file into its working directory when
    # a container is killed for memory, which otherwise landed in whatever checkout ran `make up`.
    ( cd "$RUN_DIR"
      export CONTAINERS_CONF=$INFRA_DIR/containers.conf
      setsid nohup podman system service --time=0 "unix://$NPS_PODMAN_SOCKET" \
          >"$LOG_DIR/podman.out" 2>&1 < /dev/null &
      echo $! > "$RUN_DIR/podman.pid" )
    wait_until 30 podman podman_healthy || die "podman API did not answer; see $LOG_DIR/podman.out"
    say "podman: API on $NPS_PODMAN_SOCKET"
}

podman_stop() { stop_pid podman; rm -f "$NPS_PODMAN_SOCKET"; }
