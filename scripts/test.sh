#!/usr/bin/env bash
# The whole test suite: lint, then pytest against real PostgreSQL and Redis.
# Uses DATABASE_URL / REDIS_URL when set, the embedded servers under AIOS_DATA_DIR otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

if [[ -z "${DATABASE_URL:-}" || -z "${REDIS_URL:-}" ]]; then
  export AIOS_DATA_DIR="${AIOS_DATA_DIR:-.aios-test}"
  eval "$($PY -m aios_site.embedded env | grep '^export ')"
fi
echo "test: database ${DATABASE_URL%%\?*} redis ${REDIS_URL}"

.venv/bin/ruff check .
.venv/bin/ruff format --check .

set +e
$PY -m pytest "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit $rc
