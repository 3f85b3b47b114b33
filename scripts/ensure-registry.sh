#!/usr/bin/env bash
# The tests and the demo run the CNCF distribution registry (Debian package
# docker-registry). Install it when it is missing and we are allowed to.
set -euo pipefail
if command -v docker-registry >/dev/null 2>&1; then exit 0; fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "docker-registry is missing: install the Debian package 'docker-registry' (apt-get install docker-registry)" >&2
  exit 1
fi
echo "installing docker-registry (Debian package)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
# The package starts a system service on port 5000 where it can; we run our own.
(systemctl disable --now docker-registry >/dev/null 2>&1 || true)
