#!/usr/bin/env bash
# Build the TGI emulator image `zephyr-tgi-emulator:latest` (+ `:<package version>`) fully offline
# with respect to container registries:
#   (a) base image zephyr-tgi-base:bookworm, imported from a debootstrap'ed Debian bookworm minbase
#       root filesystem cached as a tarball (default /var/cache/zephyr-tgi/bookworm-minbase.tar);
#   (b) a wheelhouse: the project's wheel (rebuilt every time) + its runtime dependencies and the
#       `testing` extra, as binary wheels for Debian bookworm's CPython 3.11 on this architecture;
#   (c) DOCKER_BUILDKIT=0 docker build with docker/emulator/Dockerfile on a temporary context.
#
# Usage: docker/emulator/build.sh [--rebuild-base] [REPO_ROOT]
#   REPO_ROOT defaults to the repository containing this script.
# Environment:
#   PYTHON                       interpreter whose pip builds the wheelhouse
#                                (default: REPO_ROOT/.venv/bin/python if present, else python3)
#   ZEPHYR_TGI_CACHE_DIR         cache for the rootfs tarball (default /var/cache/zephyr-tgi)
#   ZEPHYR_TGI_DEBIAN_MIRROR     Debian mirror for debootstrap (default: read from the apt sources)
#   ZEPHYR_TGI_IMAGE             image name (default zephyr-tgi-emulator)
# Needs: a running Docker daemon (scripts/ci/docker-setup.sh), root for debootstrap on first run.
set -euo pipefail

log() { printf '[emulator-build] %s\n' "$*" >&2; }
die() { printf '[emulator-build] ERROR: %s\n' "$*" >&2; exit 1; }
t0=$SECONDS
step() { log "$* (t=+$((SECONDS - t0))s)"; }

REBUILD_BASE=0
ROOT=""
for arg in "$@"; do
    case "$arg" in
        --rebuild-base) REBUILD_BASE=1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        -*) die "unknown option: $arg" ;;
        *) ROOT="$arg" ;;
    esac
done
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${ROOT:-$HERE/../..}" && pwd)"
[ -f "$ROOT/pyproject.toml" ] || die "no pyproject.toml in $ROOT"
DOCKERFILE="$ROOT/docker/emulator/Dockerfile"
[ -f "$DOCKERFILE" ] || die "missing $DOCKERFILE"

if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip"

CACHE_DIR="${ZEPHYR_TGI_CACHE_DIR:-/var/cache/zephyr-tgi}"
SUITE=bookworm
BASE_IMAGE="zephyr-tgi-base:$SUITE"
BASE_TAR="$CACHE_DIR/$SUITE-minbase.tar"
# python3-venv brings ensurepip's bundled pip/setuptools wheels: enough to create the venv in the
# Dockerfile without any network. No CA bundle is needed: the emulator never talks TLS.
BASE_PACKAGES="python3,python3-venv"
IMAGE="${ZEPHYR_TGI_IMAGE:-zephyr-tgi-emulator}"
# Debian bookworm: CPython 3.11 and glibc 2.36 (wheels up to manylinux_2_36 fit).
PY_VERSION=3.11
GLIBC_MINOR=36
ARCH="$(uname -m)"

docker info >/dev/null 2>&1 || die "Docker daemon not reachable (run scripts/ci/docker-setup.sh first)"

VERSION="$("$PYTHON" - "$ROOT/pyproject.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)["project"]["version"])
EOF
)" || die "cannot read the project version from $ROOT/pyproject.toml"
log "repo $ROOT, zephyr-tgi $VERSION, arch $ARCH, python for pip: $PYTHON"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/zephyr-tgi-emulator-build.XXXXXX")"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# --- (a) base image ----------------------------------------------------------------------------
debian_mirror() {
    if [ -n "${ZEPHYR_TGI_DEBIAN_MIRROR:-}" ]; then echo "$ZEPHYR_TGI_DEBIAN_MIRROR"; return; fi
    local m=""
    # deb822 sources: the first URIs of a stanza whose Suites list the plain suite.
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        m="$(awk -v suite="$SUITE" '
            BEGIN { RS=""; FS="\n" }
            {
                uris=""; ok=0; deb=0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uris=u[1] }
                    if ($i ~ /^Types:/ && $i ~ /(^|[ \t])deb([ \t]|$)/) deb=1
                    if ($i ~ /^Suites:/) { n=split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok=1 }
                }
                if (ok && deb && uris != "") { print uris; exit }
            }' /etc/apt/sources.list.d/*.sources)"
    fi
    # one-line sources: "deb [options] URI SUITE components".
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m="$(sed -E 's/\[[^]]*\]//' /etc/apt/sources.list \
            | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }')"
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

base_label() {
    docker image inspect --format '{{ index .Config.Labels "org.zephyr-tgi.base.packages" }}' "$BASE_IMAGE" 2>/dev/null || true
}

if [ "$REBUILD_BASE" = 1 ]; then
    log "--rebuild-base: dropping $BASE_TAR and $BASE_IMAGE"
    rm -f "$BASE_TAR" "$BASE_TAR.packages"
    docker image rm -f "$BASE_IMAGE" >/dev/null 2>&1 || true
fi
# A cached tarball made with another package list is stale.
if [ -f "$BASE_TAR" ] && [ "$(cat "$BASE_TAR.packages" 2>/dev/null || true)" != "$BASE_PACKAGES" ]; then
    log "cached $BASE_TAR was made with other packages; rebuilding it"
    rm -f "$BASE_TAR" "$BASE_TAR.packages"
    docker image rm -f "$BASE_IMAGE" >/dev/null 2>&1 || true
fi

if [ "$(base_label)" = "$BASE_PACKAGES" ]; then
    log "base image $BASE_IMAGE present"
else
    if [ ! -f "$BASE_TAR" ]; then
        [ "$(id -u)" -eq 0 ] || die "debootstrap needs root to create $BASE_TAR"
        command -v debootstrap >/dev/null 2>&1 || die "debootstrap missing (run scripts/ci/docker-setup.sh)"
        MIRROR="$(debian_mirror)"
        mkdir -p "$CACHE_DIR"
        ROOTFS="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
        # shellcheck disable=SC2064
        trap "rm -rf '$ROOTFS' '$WORK'" EXIT
        step "debootstrap --variant=minbase --include=$BASE_PACKAGES $SUITE from $MIRROR (first run only, ~1 min)"
        if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" \
                >"$WORK/debootstrap.log" 2>&1; then
            tail -n 30 "$WORK/debootstrap.log" >&2
            die "debootstrap failed (full log above)"
        fi
        # Trim what a container never needs: downloaded .debs, apt lists, docs, man pages, locales.
        rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin \
               "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* \
               "$ROOTFS"/usr/share/info/* "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/*
        find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
        # Container runtime owns these files.
        : >"$ROOTFS/etc/hostname"
        : >"$ROOTFS/etc/resolv.conf"
        step "packing rootfs into $BASE_TAR"
        tar --numeric-owner --xattrs -C "$ROOTFS" -cf "$BASE_TAR.tmp" .
        mv "$BASE_TAR.tmp" "$BASE_TAR"
        printf '%s' "$BASE_PACKAGES" >"$BASE_TAR.packages"
        rm -rf "$ROOTFS"
        trap cleanup EXIT
        log "cached $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1))"
    else
        log "using cached rootfs $BASE_TAR"
    fi
    step "docker import $BASE_TAR as $BASE_IMAGE"
    docker image rm -f "$BASE_IMAGE" >/dev/null 2>&1 || true
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --change "LABEL org.zephyr-tgi.base.packages=$BASE_PACKAGES" \
        --change "LABEL org.opencontainers.image.title=zephyr-tgi-base" \
        --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase + $BASE_PACKAGES (debootstrap)\"" \
        --message "debootstrap --variant=minbase --include=$BASE_PACKAGES $SUITE" \
        "$BASE_TAR" "$BASE_IMAGE" >/dev/null
fi

# --- (b) wheelhouse ----------------------------------------------------------------------------
CTX="$WORK/context"
mkdir -p "$CTX/wheels"
step "building the zephyr-tgi wheel from $ROOT"
if ! "$PYTHON" -m pip wheel --no-deps --disable-pip-version-check -q -w "$CTX/wheels" "$ROOT" \
        >"$WORK/pip-wheel.log" 2>&1; then
    cat "$WORK/pip-wheel.log" >&2
    die "pip wheel of the project failed"
fi
project_wheels=("$CTX"/wheels/zephyr_tgi-*.whl)
PROJECT_WHEEL="${project_wheels[0]}"
[ -f "$PROJECT_WHEEL" ] || die "pip wheel produced no zephyr_tgi wheel"
log "built $(basename "$PROJECT_WHEEL")"

# Binary wheels for the image's interpreter, whatever the host's Python is: CPython 3.11,
# manylinux up to glibc 2.36, this machine's architecture.
platforms=()
for ((m = GLIBC_MINOR; m >= 5; m--)); do platforms+=(--platform "manylinux_2_${m}_${ARCH}"); done
platforms+=(--platform "manylinux2014_${ARCH}" --platform "manylinux2010_${ARCH}" --platform "manylinux1_${ARCH}")
step "downloading runtime + [testing] dependency wheels for cp${PY_VERSION/./} ${ARCH}"
if ! "$PYTHON" -m pip download --disable-pip-version-check -q -d "$CTX/wheels" \
        --only-binary=:all: "${platforms[@]}" \
        --implementation cp --python-version "$PY_VERSION" \
        --abi "cp${PY_VERSION/./}" --abi abi3 --abi none \
        "${PROJECT_WHEEL}[testing]" >"$WORK/pip-download.log" 2>&1; then
    grep -v 'is ignored: it is neither a file nor a directory' "$WORK/pip-download.log" >&2 || true
    die "pip download of the dependencies failed"
fi
wheels=("$CTX"/wheels/*.whl)
log "wheelhouse: ${#wheels[@]} wheels, $(du -sh "$CTX/wheels" | cut -f1)"

# --- (c) docker build --------------------------------------------------------------------------
cp "$DOCKERFILE" "$CTX/Dockerfile"
REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
step "docker build -t $IMAGE:latest -t $IMAGE:$VERSION"
DOCKER_BUILDKIT=0 docker build \
    --build-arg "VERSION=$VERSION" \
    --build-arg "REVISION=$REVISION" \
    --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    -t "$IMAGE:latest" -t "$IMAGE:$VERSION" \
    "$CTX" >"$WORK/docker-build.log" 2>&1 || { cat "$WORK/docker-build.log" >&2; die "docker build failed"; }
grep -E '^(Step|Successfully)' "$WORK/docker-build.log" | sed 's/^/[emulator-build]   /' >&2 || true

# Drop untagged leftovers: builder-stage images and emulator images replaced by this build.
docker image prune -f --filter "label=org.zephyr-tgi.stage=builder" >/dev/null 2>&1 || true
docker image prune -f --filter "label=org.opencontainers.image.title=zephyr-tgi-emulator" >/dev/null 2>&1 || true

log "done in $((SECONDS - t0))s: $IMAGE:latest $IMAGE:$VERSION ($(docker image inspect --format '{{.Size}}' "$IMAGE:latest" | awk '{printf "%.0f MB", $1/1e6}'))"
