#!/usr/bin/env bash
# Install Debian's Chromium for the browser test (tests/test_mlflow_ui.py), once.
# Playwright drives it through executable_path=/usr/bin/chromium, so no Playwright browser
# download is needed (it would fail offline). Idempotent: does nothing if it is already there.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ ! -x "$CHROMIUM" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends chromium
fi

"$CHROMIUM" --version
