#!/usr/bin/env bash
# Sets up Docker on a Debian (bookworm) machine for the compose test
# (tests/deploy/test_compose_stack.py), idempotently, and prints what it did and how
# long each step took.  Needs root, apt and a Debian mirror; no container registry:
#
#   1. docker.io (and debootstrap) from Debian, if dockerd is missing;
#   2. docker-compose v2 from trixie (bookworm's 1.29 rejects this project's
#      docker-compose.yml), trixie pinned at priority 100 so nothing else moves;
#   3. dockerd, started in the background if it is not answering;
#   4. a wheel server: python -m http.server on 127.0.0.1:$HPO_WHEEL_PORT serving the
#      local wheel directories and indexes named in this host's pip configuration;
#   5. local base images, as no registry can be pulled from:
#        local/debian:bookworm   debootstrap --variant=minbase, then docker import
#        local/hpo-python:test   + Python 3.11 venv, this host's CA certificates, pip.conf
#        local/pytorch:test      + torch/torchvision as installed where this runs (the
#                                test venv's), from the local wheels: the Dockerfile's
#                                BASE_IMAGE in the test
#        local/secantusdb:test   + SecantusDB, standing in for mongo:8.0
#
# Steps run inside `step` (for its timing), where bash's errexit does not apply: each
# failure is checked explicitly and ends the script with a message and a non-zero exit.
# Docker's layer cache is reused (a build whose inputs did not change takes seconds);
# local/debian:bookworm is made once.  HPO_DOCKER_REFRESH=1 removes the local images first.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
PORT="${HPO_WHEEL_PORT:-3141}"
STATE="${HPO_DOCKER_STATE:-/var/cache/hpo-docker-test}"
SUITE=bookworm
START=$(date +%s.%N)
export DEBIAN_FRONTEND=noninteractive DOCKER_BUILDKIT=0

log() { printf '[setup-host %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { log "FAILED: $*"; exit 1; }
# step NAME COMMAND...: runs COMMAND, then prints how long it took.
step() {
    local name=$1 t0 rc=0
    shift
    t0=$(date +%s.%N)
    log "$name ..."
    "$@" || rc=$?
    log "$name: $( ((rc == 0)) && echo done || echo "FAILED (exit $rc)") in $(elapsed "$t0") s"
    return "$rc"
}
elapsed() { python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$1"; }

[[ $(id -u) == 0 ]] || die "run as root (it installs packages and starts dockerd)"
command -v apt-get >/dev/null || die "not a Debian machine (no apt-get)"
mkdir -p "$STATE"

debian_mirror() {
    # The mirror apt uses for the main archive (not security), deb822 or one-line form.
    local mirror
    mirror=$(grep -hs -E '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
        | grep -v -E 'security|/debian-security' | head -n1 || true)
    [[ -n $mirror ]] || mirror=$(grep -hs -E '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | awk '$3 !~ /security/ {print $2}' | grep -E '/debian/?$' | head -n1 || true)
    echo "${mirror:-http://deb.debian.org/debian}"
}
MIRROR=$(debian_mirror)

install_docker() {
    if command -v dockerd >/dev/null && command -v debootstrap >/dev/null; then
        log "docker.io and debootstrap already installed ($(dockerd --version))"
        return
    fi
    apt-get update -q || die "apt-get update failed"
    apt-get install -y -q docker.io debootstrap || die "could not install docker.io and debootstrap"
}

install_compose() {
    if docker compose version --short 2>/dev/null | grep -q -E '^v?2\.(2[4-9]|[3-9][0-9])'; then
        log "docker compose $(docker compose version --short) already installed"
        return
    fi
    cat > /etc/apt/sources.list.d/trixie.sources <<SOURCES
# Added by hpo-queue's deploy/test-docker/setup-host.sh for docker-compose v2 only.
Types: deb
URIs: $MIRROR
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    cat > /etc/apt/preferences.d/trixie-low <<PREFS
# Added by hpo-queue's deploy/test-docker/setup-host.sh: never upgrade to trixie unasked.
Package: *
Pin: release n=trixie
Pin-Priority: 100
PREFS
    apt-get update -q || die "apt-get update failed"
    apt-get install -y -q -t trixie --no-install-recommends docker-compose \
        || die "could not install docker-compose from trixie"
    docker compose version >/dev/null || die "docker compose does not run after installing docker-compose"
    log "installed docker compose $(docker compose version --short)"
}

start_dockerd() {
    if docker info >/dev/null 2>&1; then
        log "dockerd already running"
        return
    fi
    log "starting dockerd (log: $STATE/dockerd.log)"
    nohup dockerd >>"$STATE/dockerd.log" 2>&1 &
    for _ in $(seq 120); do
        docker info >/dev/null 2>&1 && { log "dockerd answers (pid $(pidof dockerd))"; return; }
        sleep 0.5
    done
    tail -n 30 "$STATE/dockerd.log"
    die "dockerd did not answer within 60 s"
}

start_wheel_server() {
    # Maps the host's pip configuration (find-links and index URLs on local disk) to
    # http://127.0.0.1:$PORT/<n>/, and writes the matching pip.conf for the images.
    python3 "$HERE/wheel_sources.py" "$STATE/wheels" "$PORT" > "$STATE/pip.conf" \
        || die "could not read this host's pip configuration"
    log "pip.conf for the images:"; sed 's/^/    /' "$STATE/pip.conf"
    if python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=3)" \
        "http://127.0.0.1:$PORT/" 2>/dev/null; then
        log "wheel server already answers on 127.0.0.1:$PORT"
        return
    fi
    nohup python3 -m http.server --bind 127.0.0.1 --directory "$STATE/wheels" "$PORT" \
        >>"$STATE/wheel-server.log" 2>&1 &
    echo $! > "$STATE/wheel-server.pid"
    for _ in $(seq 50); do
        python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=3)" \
            "http://127.0.0.1:$PORT/" 2>/dev/null && { log "wheel server pid $! on 127.0.0.1:$PORT"; return; }
        sleep 0.2
    done
    die "wheel server did not start (see $STATE/wheel-server.log)"
}

refresh_images() {
    [[ ${HPO_DOCKER_REFRESH:-0} == 1 ]] || return 0
    docker image rm -f local/secantusdb:test local/pytorch:test local/hpo-python:test \
        local/debian:$SUITE 2>/dev/null || true
    docker builder prune -f >/dev/null 2>&1 || true
}

debian_image() {
    if docker image inspect "local/debian:$SUITE" >/dev/null 2>&1; then
        log "local/debian:$SUITE already present"
        return
    fi
    local rootfs="$STATE/rootfs-$SUITE"
    rm -rf "$rootfs"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" > "$STATE/debootstrap.log" 2>&1 \
        || { tail -n 30 "$STATE/debootstrap.log"; die "debootstrap failed"; }
    tar -C "$rootfs" -c . | docker import - "local/debian:$SUITE" >/dev/null \
        || die "docker import of the $SUITE root file system failed"
    rm -rf "$rootfs"
}

build_context() {
    # The images' build context: their Dockerfiles, the host's CA certificates, pip.conf.
    local ctx="$STATE/context"
    rm -rf "$ctx" && mkdir -p "$ctx/ca-certificates"
    cp "$HERE"/images/* "$ctx/"
    cp "$STATE/pip.conf" "$ctx/pip.conf"
    shopt -s nullglob
    local certs=(/usr/local/share/ca-certificates/*.crt)
    ((${#certs[@]})) && cp "${certs[@]}" "$ctx/ca-certificates/"
    log "CA certificates for the images: ${#certs[@]} from /usr/local/share/ca-certificates"
}

build() {  # build TAG DOCKERFILE [--build-arg ...]
    local tag=$1 file=$2
    shift 2
    nice -n 10 docker build --network host -q -t "$tag" -f "$STATE/context/$file" "$@" \
        "$STATE/context" > "$STATE/build-${file%.Dockerfile}.log" 2>&1 \
        || { tail -n 40 "$STATE/build-${file%.Dockerfile}.log"; return 1; }
}

torch_requirements() {
    # The torch and torchvision releases installed here (the test venv's), so the
    # images run what the suite runs; unpinned where none is installed.
    python3 -c "
import importlib.metadata as m
for name in ('torch', 'torchvision'):
    try:
        print(f'{name}=={m.version(name)}', end=' ')
    except m.PackageNotFoundError:
        print(name, end=' ')"
}

secantusdb_version() {
    python3 -c "import importlib.metadata as m; print(m.version('secantusdb'))" 2>/dev/null \
        || python3 -c "
import re, tomllib
deps = tomllib.load(open('$HERE/../../pyproject.toml', 'rb'))['project']['dependencies']
print(next(re.sub(r'^secantusdb>=', '', d) for d in deps if d.startswith('secantusdb')))"
}

log "Debian mirror: $MIRROR; state in $STATE"
step "install docker.io + debootstrap" install_docker
step "install docker compose v2 (trixie, pinned 100)" install_compose
step "start dockerd" start_dockerd
step "start wheel server" start_wheel_server
step "refresh (HPO_DOCKER_REFRESH=${HPO_DOCKER_REFRESH:-0})" refresh_images
step "image local/debian:$SUITE (debootstrap + import)" debian_image
step "build context" build_context
step "image local/hpo-python:test" build local/hpo-python:test python.Dockerfile \
    --build-arg "DEBIAN_IMAGE=local/debian:$SUITE"
TORCH_REQUIREMENTS=$(torch_requirements)
step "image local/pytorch:test ($TORCH_REQUIREMENTS)" build local/pytorch:test torch.Dockerfile \
    --build-arg "TORCH_REQUIREMENTS=$TORCH_REQUIREMENTS"
SECANTUSDB_VERSION=$(secantusdb_version)
step "image local/secantusdb:test (secantusdb==$SECANTUSDB_VERSION)" build local/secantusdb:test \
    secantusdb.Dockerfile --build-arg "SECANTUSDB_VERSION=$SECANTUSDB_VERSION"
log "ready: $(docker version --format 'engine {{.Server.Version}}'), compose $(docker compose version --short); total $(elapsed "$START") s"
