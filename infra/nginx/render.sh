#!/bin/sh
# Write NPS's nginx configuration from nps.conf.template (next to this script): render.sh OUT DIR LOG_DIR
# Used by infra/lib/nginx.sh and by the nginx service of infra/compose.yaml (POSIX sh: it runs
# in the official nginx image too). Settings come from the environment: NPS_BIND, NPS_WEB_PORT,
# NPS_API_PORT, NPS_MINIO_PORT (defaults as in infra/lib/common.sh) and NPS_API_ACCEL_SECRET
# (required: the API trusts X-Accel-Redirect only from a proxy that sends it).
set -eu
out=$1 dir=$2 log_dir=$3
: "${NPS_API_ACCEL_SECRET:?set NPS_API_ACCEL_SECRET}"
case $NPS_API_ACCEL_SECRET in *[!A-Za-z0-9]*) echo "NPS_API_ACCEL_SECRET: letters and digits only" >&2; exit 2;; esac
for port in "${NPS_WEB_PORT:=8088}" "${NPS_API_PORT:=8080}" "${NPS_MINIO_PORT:=9100}"; do
    case $port in ''|*[!0-9]*) echo "not a port number: '$port'" >&2; exit 2;; esac
done
case ${NPS_BIND:=127.0.0.1} in *[!0-9.]*) echo "NPS_BIND: an IPv4 address, got '$NPS_BIND'" >&2; exit 2;; esac
for path in "$out" "$dir" "$log_dir"; do  # sed's replacement text: no |, & or backslash
    case $path in *[\|\&\\]*|*"
"*) echo "unusable path for the nginx configuration: '$path'" >&2; exit 2;; esac
done
template=$(dirname "$0")/nps.conf.template
umask 077
trap 'rm -f "$out.tmp"' EXIT
sed -e "s|@DIR@|$dir|g" -e "s|@LOG_DIR@|$log_dir|g" -e "s|@BIND@|$NPS_BIND|g" \
    -e "s|@WEB_PORT@|$NPS_WEB_PORT|g" -e "s|@API_PORT@|$NPS_API_PORT|g" \
    -e "s|@MINIO_PORT@|$NPS_MINIO_PORT|g" -e "s|@SECRET@|$NPS_API_ACCEL_SECRET|g" "$template" > "$out.tmp"
mv -f "$out.tmp" "$out"
