#!/usr/bin/env bash
# Set up prov4torch on a fresh machine: a virtual environment in .venv with torch (pinned,
# installed first so pip never resolves a multi-GB CUDA build), prov4torch with its test and
# example extras, the frameworks the integration tests run (torch pinned again beside them), and Graphviz for the audit graphs. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q torch==2.13.0 -e '.[test,examples,integrations]'
if ! command -v dot >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq graphviz >/dev/null
fi
