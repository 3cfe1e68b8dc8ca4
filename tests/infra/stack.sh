#!/usr/bin/env bash
# The test stack, idempotent (see shared TEST-INFRA.md): apt packages, a Docker engine without a
# bridge (only loopback traffic; every container uses host networking), and the offline base image
# disdat-test-base:bookworm. Registry and moto servers are started per test session by fixtures.
#
#   tests/infra/stack.sh up       install what is missing, start dockerd, build the base image
#   tests/infra/stack.sh status   exit 0 when the engine answers and the base image exists
set -euo pipefail

STATE=${DISDAT_STACK_DIR:-/var/tmp/disdat-stack}
BASE_IMAGE=disdat-test-base:bookworm
mkdir -p "$STATE"

log() { echo "[stack] $*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "the test stack installs packages and starts dockerd: run it as root"
    exit 1
  fi
}

install_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-registry >/dev/null || [ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v git >/dev/null || missing+=(git)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # keep apt from starting the packaged dockerd (it would create the default bridge)
    local policy=/usr/sbin/policy-rc.d had_policy=0
    [ -e "$policy" ] && had_policy=1 && cp "$policy" "$STATE/policy-rc.d.saved"
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ "$had_policy" = 1 ]; then cp "$STATE/policy-rc.d.saved" "$policy"; else rm -f "$policy"; fi
  fi
}

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

start_engine() {
  if engine_up; then return; fi
  log "starting dockerd (no bridge, no iptables)"
  # the Debian package may have started its own daemon with a bridge; ours replaces only a dead one
  setsid dockerd --bridge=none --iptables=false --ip-masq=false \
    --pidfile "$STATE/dockerd.pid" >"$STATE/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    if engine_up; then log "dockerd is up"; return; fi
    sleep 1
  done
  log "dockerd did not start; last log lines:"
  tail -20 "$STATE/dockerd.log" >&2 || true
  exit 1
}

build_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  log "building $BASE_IMAGE with debootstrap (about a minute)"
  local rootfs="$STATE/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates,git \
    bookworm "$rootfs" >"$STATE/debootstrap.log" 2>&1 || { tail -20 "$STATE/debootstrap.log" >&2; exit 1; }
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  log "$BASE_IMAGE is ready"
}

case "${1:-up}" in
  up)
    need_root
    install_packages
    start_engine
    build_base_image
    ;;
  status)
    engine_up && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1
    ;;
  *)
    echo "usage: $0 up|status" >&2
    exit 2
    ;;
esac
