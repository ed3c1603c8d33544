# RabbitMQ from Debian's rabbitmq-server, run as our own node on our own ports.

RMQ_BASE=$NPS_CACHE/rabbitmq

rmq_env() {
    export HOME=$RMQ_BASE  # the Erlang cookie lives here, not in root's home
    export RABBITMQ_NODENAME=nps@localhost
    export RABBITMQ_NODE_IP_ADDRESS=$NPS_BIND
    export RABBITMQ_NODE_PORT=$NPS_AMQP_PORT
    export RABBITMQ_DIST_PORT=$NPS_RABBITMQ_DIST_PORT
    export ERL_EPMD_ADDRESS=127.0.0.1
    export ERL_EPMD_PORT=$NPS_EPMD_PORT
    export RABBITMQ_MNESIA_BASE=$RMQ_BASE/mnesia
    export RABBITMQ_LOG_BASE=$RMQ_BASE/log
    export RABBITMQ_CONFIG_FILE=$RMQ_BASE/rabbitmq.conf
    export RABBITMQ_ENABLED_PLUGINS_FILE=$RMQ_BASE/enabled_plugins
    export RABBITMQ_PID_FILE=$RMQ_BASE/beam.pid
}

rabbitmq_install() { ensure_debs rabbitmq-server; }

rabbitmq_healthy() {
    ( rmq_env; /usr/lib/rabbitmq/bin/rabbitmq-diagnostics -q check_port_connectivity --timeout 5 ) >/dev/null 2>&1
}

rabbitmq_start() {
    if pid_alive rabbitmq && rabbitmq_healthy; then say "rabbitmq: running on $NPS_BIND:$NPS_AMQP_PORT"; return 0; fi
    mkdir -p "$RMQ_BASE/mnesia" "$RMQ_BASE/log"
    ( umask 077; cat > "$RMQ_BASE/rabbitmq.conf" <<CONF
listeners.tcp.default = $NPS_BIND:$NPS_AMQP_PORT
management.tcp.ip = $NPS_BIND
management.tcp.port = $NPS_RABBITMQ_MGMT_PORT
default_user = $NPS_RABBITMQ_USER
default_pass = $NPS_RABBITMQ_PASSWORD
default_user_tags.administrator = true
loopback_users = none
# Quorum queues and confirms need disk; stop publishers well before the disk is full.
disk_free_limit.absolute = 1GB
CONF
    )
    echo '[rabbitmq_management].' > "$RMQ_BASE/enabled_plugins"
    say "rabbitmq: starting"
    # `cd` first, on its own: in `cd && cmd &` the `&` would background a bash wrapper that keeps
    # our stdout open (a caller reading it through a pipe would then wait forever).
    ( rmq_env; cd "$RMQ_BASE" || exit 1
      setsid nohup /usr/lib/rabbitmq/bin/rabbitmq-server >"$LOG_DIR/rabbitmq.out" 2>&1 < /dev/null &
      echo $! > "$RUN_DIR/rabbitmq.pid" )
    wait_until 120 rabbitmq rabbitmq_healthy || die "rabbitmq did not become healthy; see $LOG_DIR/rabbitmq.out"
    # default_user only applies to a fresh node: make sure ours exists with the current password.
    # The password goes through stdin, never the command line (where `ps` would show it).
    ( rmq_env
      ctl=/usr/lib/rabbitmq/bin/rabbitmqctl
      printf '%s\n' "$NPS_RABBITMQ_PASSWORD" | $ctl -q add_user "$NPS_RABBITMQ_USER" >/dev/null 2>&1 \
          || printf '%s\n' "$NPS_RABBITMQ_PASSWORD" | $ctl -q change_password "$NPS_RABBITMQ_USER" >/dev/null
      $ctl -q set_user_tags "$NPS_RABBITMQ_USER" administrator >/dev/null
      $ctl -q set_permissions -p / "$NPS_RABBITMQ_USER" '.*' '.*' '.*' >/dev/null
      $ctl -q delete_user guest >/dev/null 2>&1 || true )
    say "rabbitmq: healthy on $NPS_BIND:$NPS_AMQP_PORT"
}

rabbitmq_stop() {
    if pid_alive rabbitmq; then
        ( rmq_env; /usr/lib/rabbitmq/bin/rabbitmqctl -q stop >/dev/null 2>&1 ) || true
    fi
    stop_pid rabbitmq
    # The node started epmd on our private port; ask it to exit (it refuses while nodes remain).
    ERL_EPMD_PORT=$NPS_EPMD_PORT epmd -kill >/dev/null 2>&1 || true
}
