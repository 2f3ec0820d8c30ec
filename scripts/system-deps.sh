#!/usr/bin/env bash
# Installs the system packages the tests need (the real Prometheus and promtool, docker-compose to validate
# the compose file) when they are missing.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v docker-compose >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "prometheus is missing and this user cannot install it: apt-get install prometheus" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus docker-compose >/dev/null
# The Debian package may start a service on some hosts; the tests start their own Prometheus.
$SUDO systemctl stop prometheus 2>/dev/null || true
