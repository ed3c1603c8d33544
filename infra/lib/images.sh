# Job images, built locally (nothing can be pulled here) and imported into Podman.
#   nps/busybox:1  busybox-static and its applets: tiny, for tests and no-op jobs
#   nps/neuro:1    Debian bookworm minbase + python3-numpy, python3-nibabel, dcm2niix

NPS_BUSYBOX_IMAGE=localhost/nps/busybox:1
NPS_NEURO_IMAGE=localhost/nps/neuro:1

_podman() { CONTAINERS_CONF=$INFRA_DIR/containers.conf podman "$@"; }

image_present() { _podman image exists "$1"; }

# The Debian mirror this machine's apt uses (never hard-coded in the repo).
debian_mirror() {
    local uri
    uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
    [ -n "$uri" ] || uri=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
    [ -n "$uri" ] || die "no Debian mirror found in the apt sources"
    echo "$uri"
}

busybox_image_build() {
    image_present "$NPS_BUSYBOX_IMAGE" && return 0
    ensure_debs busybox-static
    say "images: building $NPS_BUSYBOX_IMAGE"
    local root
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp" "$root/output" "$root/etc"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    echo 'nobody:x:65534:65534:nobody:/tmp:/bin/sh' > "$root/etc/passwd"
    echo 'nogroup:x:65534:' > "$root/etc/group"
    chmod 1777 "$root/tmp"
    tar -C "$root" -c . | _podman import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' - "$NPS_BUSYBOX_IMAGE" >/dev/null
    rm -rf "$root"
}

neuro_image_build() {
    image_present "$NPS_NEURO_IMAGE" && return 0
    ensure_debs debootstrap
    local root=$NPS_CACHE/images/neuro-rootfs
    if [ ! -f "$root/.complete" ]; then
        say "images: debootstrap of the neuro image (first run only; a few minutes)"
        rm -rf "$root"; mkdir -p "$root"
        debootstrap --variant=minbase --include=python3-numpy,python3-nibabel,dcm2niix \
            bookworm "$root" "$(debian_mirror)" >"$LOG_DIR/debootstrap.log" 2>&1 \
            || die "debootstrap failed; see $LOG_DIR/debootstrap.log"
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        mkdir -p "$root/output"
        touch "$root/.complete"
    fi
    say "images: importing $NPS_NEURO_IMAGE"
    tar -C "$root" --exclude=./.complete -c . | _podman import --change 'CMD ["/bin/bash"]' - "$NPS_NEURO_IMAGE" >/dev/null
}
