#!/usr/bin/env bash
# Make a Docker engine available on this machine (Debian 12, run as root).
#
# Idempotent:
#   1. installs docker.io, docker-compose (v1, 1.29) and debootstrap with apt, only if missing;
#   2. if `docker info` fails, starts dockerd in the background (unless one is already starting),
#      choosing a storage driver and iptables mode that work in this sandbox;
#   3. waits, with a bounded timeout, until `docker info` succeeds.
# Exits non-zero with a clear message when anything fails.
#
# Environment knobs (all optional):
#   ZEPHYR_TGI_DOCKERD_TIMEOUT          seconds to wait for the daemon (default 90)
#   ZEPHYR_TGI_DOCKERD_LOG              dockerd log file (default /var/log/zephyr-tgi-dockerd.log)
#   ZEPHYR_TGI_DOCKER_STORAGE_DRIVER    force a storage driver (overlay2, fuse-overlayfs, vfs)
#   ZEPHYR_TGI_DOCKERD_EXTRA_ARGS       extra dockerd flags, word-split
set -euo pipefail

log() { printf '[docker-setup] %s\n' "$*" >&2; }
die() { printf '[docker-setup] ERROR: %s\n' "$*" >&2; exit 1; }

TIMEOUT="${ZEPHYR_TGI_DOCKERD_TIMEOUT:-90}"
DOCKERD_LOG="${ZEPHYR_TGI_DOCKERD_LOG:-/var/log/zephyr-tgi-dockerd.log}"
SOCK=/var/run/docker.sock
export DOCKER_HOST="unix://${SOCK}"

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages and starts dockerd)"

# --- 1. packages -------------------------------------------------------------------------------
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
    log "installing with apt: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq "${need[@]}" >/dev/null \
        || die "apt-get install ${need[*]} failed"
else
    log "docker.io, docker-compose and debootstrap already installed"
fi
command -v docker >/dev/null 2>&1 || die "no docker client on PATH after installing docker.io"

# --- 2. daemon ---------------------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
    log "Docker daemon already running ($(docker info --format '{{.ServerVersion}}, storage driver {{.Driver}}'))"
    exit 0
fi

# Alive and not a zombie (a killed daemon may linger as one when PID 1 reaps slowly).
pid_alive() {
    local state
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
    state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# A dockerd whose pid file names a live dockerd process.
dockerd_pid() {
    local pid
    [ -r /var/run/docker.pid ] || return 1
    pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    pid_alive "$pid" && grep -q '^dockerd$' "/proc/$pid/comm" 2>/dev/null && echo "$pid"
}

# Can the kernel mount overlayfs here (overlay2 needs it, also on top of the backing fs)?
probe_overlay() {
    local d rc=1
    d="$(mktemp -d /var/lib/.zephyr-ovl-probe.XXXXXX)" || return 1
    mkdir -p "$d/l" "$d/u" "$d/w" "$d/m"
    echo x >"$d/l/f"
    if mount -t overlay overlay -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m" 2>/dev/null; then
        if [ -f "$d/m/f" ] && echo y >"$d/m/g" 2>/dev/null; then rc=0; fi
        umount "$d/m" 2>/dev/null || true
    fi
    rm -rf "$d"
    return "$rc"
}

# Can dockerd program NAT rules (it needs the nat table and to create chains)?
probe_iptables() {
    command -v iptables >/dev/null 2>&1 || return 1
    iptables -t nat -L -n >/dev/null 2>&1 || return 1
    iptables -t nat -N ZEPHYR-TGI-PROBE >/dev/null 2>&1 || return 1
    iptables -t nat -X ZEPHYR-TGI-PROBE >/dev/null 2>&1 || true
    return 0
}

start_dockerd() {
    local args=(--host "unix://${SOCK}") driver
    driver="${ZEPHYR_TGI_DOCKER_STORAGE_DRIVER:-}"
    if [ -z "$driver" ]; then
        if probe_overlay; then
            driver=overlay2
        elif [ -e /dev/fuse ] && command -v fuse-overlayfs >/dev/null 2>&1; then
            driver=fuse-overlayfs
        else
            driver=vfs
        fi
    fi
    log "storage driver: $driver"
    args+=(--storage-driver "$driver")

    if probe_iptables; then
        log "iptables works: default bridge networking with NAT"
    else
        # Without iptables, dockerd can still publish ports through its userland proxy
        # (docker-proxy listens on the host address, e.g. 127.0.0.1:PORT, and forwards to the
        # container over the docker0 bridge); only NAT/masquerading is lost.
        log "iptables unusable here: starting dockerd with --iptables=false --ip-masq=false --userland-proxy=true"
        args+=(--iptables=false --ip-masq=false --userland-proxy=true)
    fi

    if [ -n "${ZEPHYR_TGI_DOCKERD_EXTRA_ARGS:-}" ]; then
        # shellcheck disable=SC2206
        args+=(${ZEPHYR_TGI_DOCKERD_EXTRA_ARGS})
    fi

    # The containerd of a dockerd that was killed can outlive it for a while, holding its state
    # directory; a new dockerd then times out starting its own. Let it finish first.
    local cpid i
    cpid="$(cat /var/run/docker/containerd/containerd.pid 2>/dev/null || true)"
    if pid_alive "$cpid" && grep -q '^containerd$' "/proc/$cpid/comm" 2>/dev/null; then
        log "waiting for containerd (pid $cpid) of a previous dockerd to exit"
        for ((i = 0; i < 30 && $(pid_alive "$cpid" && echo 1 || echo 0) == 1; i++)); do sleep 0.5; done
        if pid_alive "$cpid"; then
            log "stopping leftover containerd (pid $cpid)"
            kill -TERM "$cpid" 2>/dev/null || true
            for ((i = 0; i < 20 && $(pid_alive "$cpid" && echo 1 || echo 0) == 1; i++)); do sleep 0.5; done
        fi
    fi

    mkdir -p "$(dirname "$DOCKERD_LOG")"
    # A stale pid file from a daemon that died would make dockerd refuse to start.
    rm -f /var/run/docker.pid
    log "starting: dockerd ${args[*]}  (log: $DOCKERD_LOG)"
    # setsid + nohup: the daemon must outlive this script (and the CI step that ran it).
    setsid nohup dockerd "${args[@]}" >>"$DOCKERD_LOG" 2>&1 </dev/null &
    DOCKERD_PID=$!
    STARTED_HERE=$((STARTED_HERE + 1))
    log "dockerd pid $DOCKERD_PID"
}

STARTED_HERE=0
if DOCKERD_PID="$(dockerd_pid)"; then
    log "dockerd (pid $DOCKERD_PID) is already running but not answering yet; waiting for it"
else
    start_dockerd
fi

# --- 3. wait -----------------------------------------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
until docker info >/dev/null 2>&1; do
    if ! pid_alive "$DOCKERD_PID"; then
        if [ "$STARTED_HERE" = 0 ]; then
            log "the running dockerd (pid $DOCKERD_PID) went away; starting a new one"
            start_dockerd
            deadline=$((SECONDS + TIMEOUT))
            continue
        fi
        if [ "$STARTED_HERE" = 1 ]; then
            log "dockerd exited during start-up ($(tail -n 1 "$DOCKERD_LOG" 2>/dev/null)); retrying once"
            start_dockerd
            deadline=$((SECONDS + TIMEOUT))
            continue
        fi
        log "dockerd exited during start-up; last lines of $DOCKERD_LOG:"
        tail -n 30 "$DOCKERD_LOG" >&2 || true
        die "dockerd failed to start"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        log "last lines of $DOCKERD_LOG:"
        tail -n 30 "$DOCKERD_LOG" >&2 || true
        die "Docker daemon not ready after ${TIMEOUT}s (docker info still failing)"
    fi
    sleep 0.5
done
log "Docker daemon ready after ${SECONDS}s ($(docker info --format '{{.ServerVersion}}, storage driver {{.Driver}}'))"
