#!/usr/bin/env bash
# The Debian packages the tests and the demo need beyond pip: the CNCF distribution registry
# (docker-registry) and, for the full-stack browser test, Chromium and its driver (Playwright
# drives /usr/bin/chromium: it cannot download a browser here). Install what is missing, with
# one `apt-get update`, when we are allowed to.
set -euo pipefail
declare -A need=([docker-registry]=docker-registry [chromium]=chromium [chromedriver]=chromium-driver)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing Debian packages: ${missing[*]} (install them: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The registry package starts a system service on port 5000 where it can; we run our own.
(systemctl disable --now docker-registry >/dev/null 2>&1 || true)
