#!/usr/bin/env bash
# Command-line tools the test suite needs besides Python packages (Debian/Ubuntu).
#
# Idempotent: installs only what is missing, and runs `apt-get update` only when it installs something.
#   tmux             the CLI's terminal test (tests/cli/test_cli_tmux.py) drives `zephyr-tgi chat` in a real terminal
#   chromium,        the web example's browser test (tests/examples/test_web_app_browser.py) drives the page in a
#   chromium-driver  headless Chromium through selenium and Debian's chromedriver (Debian's builds: nothing else
#                    is downloaded)
# Exits non-zero with a clear message when anything fails.
set -euo pipefail

log() { printf '[tools-setup] %s\n' "$*" >&2; }
die() { printf '[tools-setup] ERROR: %s\n' "$*" >&2; exit 1; }

need=()
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

if [ "${#need[@]}" -eq 0 ]; then
    log "already installed: tmux ($(tmux -V)), $(chromium --version 2>/dev/null | head -n1), chromedriver"
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "installing ${need[*]} needs root (or sudo)"
    SUDO=(sudo)
fi
command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install ${need[*]} with your package manager"

log "installing with apt: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq || die "apt-get update failed"
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || die "apt-get install ${need[*]} failed"
for tool in tmux chromium chromedriver; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is still missing after apt-get install"
done
log "installed: ${need[*]}"
