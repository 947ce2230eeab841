#!/usr/bin/env bash
# Set up prov4torch on a fresh machine: a virtual environment in .venv with torch (pinned,
# installed first so pip never resolves a multi-GB CUDA build), prov4torch with its test and
# example extras, the frameworks the integration tests run (torch pinned again beside them), Graphviz for the
# audit graphs, Chromium for the report's browser tests (playwright drives it) and PostgreSQL for the shared
# lineage index's tests and moto's S3 server (own venv, .venv-moto) for the object-storage tests (each test run
# starts its own servers). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q torch==2.13.0 -e '.[test,examples,integrations]'
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v dot >/dev/null 2>&1; then
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq graphviz >/dev/null
fi
if [ ! -x .venv-moto/bin/moto_server ]; then
  # the object-storage tests start moto's S3 server; moto pins a botocore that s3fs's aiobotocore refuses, so it
  # lives in a virtual environment of its own
  python3 -m venv .venv-moto
  .venv-moto/bin/pip install -q --upgrade pip
  .venv-moto/bin/pip install -q 'moto[server]==5.2.6'
fi
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  # the shared lineage index's tests start a PostgreSQL server of their own (they fail under CI without it)
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null; } \
    || echo "bootstrap: could not install postgresql: the PostgreSQL index tests will skip" >&2
fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  # the report's browser tests skip, saying so, where Chromium cannot be installed (they fail under CI)
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } \
    || echo "bootstrap: could not install chromium: the report's browser tests will skip" >&2
fi
