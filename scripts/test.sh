#!/usr/bin/env bash
# Install test dependencies (Debian packages and PyPI) and run the whole test suite,
# on SQLite and on the PostgreSQL server at 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Real peers for the tests: PostgreSQL client (pg_dump), dcmtk, stunnel (TLS for dcmtk tools
  # without it), Orthanc + its DICOMweb plugin, OpenSSL's command line, rsyslog with TLS (audit collector),
  # Tesseract (burned-in text), Chromium (share links in a real browser, driven by Playwright).
  apt-get install -y -qq --no-install-recommends \
    postgresql-client dcmtk stunnel4 orthanc orthanc-dicomweb orthanc-postgresql openssl rsyslog rsyslog-gnutls tesseract-ocr tesseract-ocr-eng \
    fonts-dejavu-core chromium unzip >/dev/null
  # npm fetches the OHIF viewer; machines that already have Node.js (e.g. from NodeSource, whose nodejs conflicts
  # with Debian's npm) keep theirs.
  command -v npm >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends npm >/dev/null
fi

# The PostgreSQL tests need the server up; on the project's machines it is installed and
# normally running, but start it if it is not.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[test]"
# The OHIF viewer served at /viewer (tests/viewer_ohif, share links): pinned @ohif/app from the npm registry, digest checked.
if command -v npm >/dev/null 2>&1; then
  scripts/install-viewer.sh
fi
# Tests are independent (own home, database, ports and temp folders): spread them over the cores.
# Many wait on subprocesses, peers and fsync, so one more worker than cores keeps both busy. PYTEST_WORKERS=0 runs serially.
WORKERS=${PYTEST_WORKERS:-$(( $(nproc) + 1 ))}
if [ "$WORKERS" -gt 0 ]; then
  set -- -n "$WORKERS" "$@"
fi
exec "$VENV/bin/python" -m pytest "$@"
