#!/usr/bin/env bash
# Install (once, into $NPS_CACHE) and run the NPS service stack on loopback.
#   infra/stack.sh up [SERVICE...]     install what is missing, start what is stopped, wait until healthy
#   infra/stack.sh down [SERVICE...]   stop what this script started (by pid)
#   infra/stack.sh status              one line per service; exit 1 if any is down
#   infra/stack.sh env                 print the path of the generated stack.env
#   infra/stack.sh mc                  also build MinIO's mc client (for bench/)
#   infra/stack.sh images              build the job images (nps/busybox:1, nps/neuro:1); `up` does too
# Services: rabbitmq elasticsearch minio podman orthanc nginx. Settings: infra/README.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"
for lib in rabbitmq elasticsearch minio podman images orthanc nginx; do
    # shellcheck disable=SC1090
    . "$here/lib/$lib.sh"
done

ALL=(rabbitmq elasticsearch minio podman orthanc nginx)

cmd=${1:-status}; shift || true
services=("$@"); [ ${#services[@]} -eq 0 ] && services=("${ALL[@]}")
for s in "${services[@]}"; do
    case " ${ALL[*]} " in *" $s "*) ;; *) die "unknown service '$s' (one of: ${ALL[*]})";; esac
done

case "$cmd" in
    up)
        ensure_secrets
        for s in "${services[@]}"; do "${s}_install"; done
        # Start the slow ones first so their boot overlaps.
        for s in "${services[@]}"; do "${s}_start"; done
        case " ${services[*]} " in *" podman "*) busybox_image_build; neuro_image_build;; esac
        write_stack_env
        say "stack is up; settings in $STACK_ENV"
        ;;
    down)
        for s in "${services[@]}"; do "${s}_stop"; done
        say "stopped: ${services[*]}"
        ;;
    status)
        rc=0
        for s in "${services[@]}"; do
            if pid_alive "$s" && "${s}_healthy"; then printf '%-14s up\n' "$s"
            elif pid_alive "$s"; then printf '%-14s unhealthy (pid %s)\n' "$s" "$(cat "$RUN_DIR/$s.pid")"; rc=1
            else printf '%-14s down\n' "$s"; rc=1; fi
        done
        exit $rc
        ;;
    env) echo "$STACK_ENV" ;;
    images) ensure_secrets; podman_install; busybox_image_build; neuro_image_build
            echo "$NPS_BUSYBOX_IMAGE"; echo "$NPS_NEURO_IMAGE" ;;
    mc) ensure_secrets; mc_install; write_stack_env; echo "$BIN_DIR/mc" ;;
    *) die "usage: $0 up|down|status|env|mc [SERVICE...]" ;;
esac
