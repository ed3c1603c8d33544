# Elasticsearch: the integ-test-zip distribution from Maven Central on the machine's JDK.

ES_HOME=$NPS_CACHE/elasticsearch/elasticsearch-$NPS_ES_VERSION
ES_DATA=$NPS_CACHE/elasticsearch/data

elasticsearch_install() {
    command -v java >/dev/null || ensure_debs openjdk-17-jre-headless
    command -v mvn >/dev/null || ensure_debs maven
    ensure_debs unzip curl
    if ! id "$NPS_SERVICE_USER" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$NPS_SERVICE_USER"
    fi
    [ -x "$ES_HOME/bin/elasticsearch" ] && return 0
    say "elasticsearch: fetching $NPS_ES_VERSION (integ-test-zip) with maven"
    local dl=$NPS_CACHE/dl
    mkdir -p "$dl" "$NPS_CACHE/elasticsearch"
    mvn -q -B -Dstyle.color=never dependency:copy \
        -Dartifact="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$NPS_ES_VERSION:zip" \
        -DoutputDirectory="$dl" >/dev/null || die "maven could not fetch elasticsearch $NPS_ES_VERSION"
    rm -rf "$ES_HOME.partial"
    mkdir -p "$ES_HOME.partial"
    unzip -q "$dl/elasticsearch-$NPS_ES_VERSION.zip" -d "$ES_HOME.partial"
    mv "$ES_HOME.partial/elasticsearch-$NPS_ES_VERSION" "$ES_HOME"
    rm -rf "$ES_HOME.partial"
}

elasticsearch_healthy() {
    http_ok "http://$NPS_BIND:$NPS_ES_PORT/_cluster/health?wait_for_status=yellow&timeout=2s"
}

elasticsearch_start() {
    if pid_alive elasticsearch && elasticsearch_healthy; then say "elasticsearch: running on $NPS_BIND:$NPS_ES_PORT"; return 0; fi
    mkdir -p "$ES_DATA" "$NPS_CACHE/elasticsearch/logs" "$NPS_CACHE/elasticsearch/run"
    cat > "$ES_HOME/config/elasticsearch.yml" <<CONF
cluster.name: nps
node.name: nps-1
discovery.type: single-node
network.host: $NPS_BIND
http.port: $NPS_ES_PORT
transport.port: $NPS_ES_TRANSPORT_PORT
path.data: $ES_DATA
path.logs: $NPS_CACHE/elasticsearch/logs
# A development node on a shared disk: do not turn indices read-only when the disk fills up.
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: true
# Loopback-only, single node: plain HTTP, no TLS or users (the API in front of it does auth).
xpack.security.enabled: false
xpack.ml.enabled: false
CONF
    chown -R "$NPS_SERVICE_USER" "$NPS_CACHE/elasticsearch"
    # Elasticsearch writes and deletes its own pid file, so it lives in a folder it owns.
    ln -sfn "$NPS_CACHE/elasticsearch/run/es.pid" "$RUN_DIR/elasticsearch.pid"
    say "elasticsearch: starting"
    local java_home
    java_home=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
    runuser -u "$NPS_SERVICE_USER" -- env ES_JAVA_HOME="$java_home" \
        ES_JAVA_OPTS="-Xms$NPS_ES_HEAP -Xmx$NPS_ES_HEAP" \
        "$ES_HOME/bin/elasticsearch" -d -p "$NPS_CACHE/elasticsearch/run/es.pid" \
        >"$LOG_DIR/elasticsearch.out" 2>&1 < /dev/null \
        || die "elasticsearch failed to start; see $LOG_DIR/elasticsearch.out"
    wait_until 180 elasticsearch elasticsearch_healthy || die "elasticsearch did not become healthy; see $NPS_CACHE/elasticsearch/logs"
    say "elasticsearch: healthy on $NPS_BIND:$NPS_ES_PORT"
}

elasticsearch_stop() { stop_pid elasticsearch; }
