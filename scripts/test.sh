#!/usr/bin/env bash
# The project's one test command (README, .ci/run): installs into .venv, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "scripts/test.sh: no tests were collected: that is a failure" >&2
  exit 1
fi
exit "$status"
