#!/usr/bin/env bash
# Installs the system packages the tests need (the real Prometheus and promtool, docker-compose to validate
# the compose file, Chromium for the browser tests, Node.js and npm for the OpenID provider of the OIDC tests and
# GraphiQL's assets) when they are missing.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v docker-compose >/dev/null \
  && command -v chromium >/dev/null && command -v node >/dev/null && command -v npm >/dev/null; then
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
# node-oidc-provider (tests/oidc) runs on Node.js; npm installs it (tests/oidc/provider.py does, when missing).
command -v node >/dev/null && command -v npm >/dev/null \
  || $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
# Chromium with its recommended fonts, so pages render text in the screenshots.
$SUDO apt-get install -y -qq chromium >/dev/null
# The Debian package may start a service on some hosts; the tests start their own Prometheus.
$SUDO systemctl stop prometheus 2>/dev/null || true
