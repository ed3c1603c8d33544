# nginx (Debian `nginx-light`) in front of the REST API: our own process and config under
# $NPS_CACHE/nginx, listening on loopback (NPS_WEB_PORT); it serves file downloads straight from
# MinIO once the API has authorized them (infra/nginx/nps.conf.template).

NGINX_DIR=$NPS_CACHE/nginx
NGINX_CONF=$NGINX_DIR/nps.conf

nginx_install() {
    # Like Orthanc's: a policy-rc.d so the package does not start a system nginx on port 80.
    orthanc_install_debs nginx-light curl
}

nginx_healthy() { curl -fsS --max-time 5 -o /dev/null "http://$NPS_BIND:$NPS_WEB_PORT/nginx-health"; }

nginx_write_config() {
    NPS_BIND=$NPS_BIND NPS_WEB_PORT=$NPS_WEB_PORT NPS_API_PORT=$NPS_API_PORT NPS_MINIO_PORT=$NPS_MINIO_PORT \
        NPS_API_ACCEL_SECRET=$NPS_API_ACCEL_SECRET sh "$INFRA_DIR/nginx/render.sh" "$NGINX_CONF" "$NGINX_DIR" "$LOG_DIR" \
        || die "could not write the nginx configuration"
}

nginx_start() {
    mkdir -p "$NGINX_DIR/tmp" "$RUN_DIR" "$LOG_DIR"
    nginx_write_config
    /usr/sbin/nginx -t -q -c "$NGINX_CONF" -p "$NGINX_DIR" 2>>"$LOG_DIR/nginx.out" \
        || die "nginx refused its configuration; see $LOG_DIR/nginx.out"
    if pid_alive nginx; then
        kill -HUP "$(cat "$RUN_DIR/nginx.pid")"  # picks up a changed configuration
    else
        say "nginx: starting"
        ( setsid nohup /usr/sbin/nginx -c "$NGINX_CONF" -p "$NGINX_DIR" >"$LOG_DIR/nginx.out" 2>&1 < /dev/null &
          echo $! > "$RUN_DIR/nginx.pid" )
    fi
    wait_until 30 nginx nginx_healthy || die "nginx did not become healthy; see $LOG_DIR/nginx.out"
    say "nginx: healthy on $NPS_BIND:$NPS_WEB_PORT (API upstream 127.0.0.1:$NPS_API_PORT)"
}

nginx_stop() { stop_pid nginx; }
