#!/usr/bin/env bash
# The project's one test command (README, .ci/run): installs into .venv, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
# Headless Chromium for the login-page test (tests/bot/serve); skipped there when absent.
# A no-op when installed; never fails the run.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "scripts/test.sh: could not install chromium; the browser test will be skipped" >&2
fi
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "scripts/test.sh: no tests were collected: that is a failure" >&2
  exit 1
fi
exit "$status"
