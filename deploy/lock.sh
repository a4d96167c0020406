#!/usr/bin/env bash
# Regenerates the pinned locks from pyproject.toml, with the SHA-256 of every file PyPI has for each
# pinned version, for Python 3.11 on Linux x86_64:
#   requirements.lock       what `pip install .` needs (the runtime), plus the build backend
#   requirements-test.lock  the same with the `test` and `demo` extras
# `make`, CI (through make) and deploy/Dockerfile install from them with --require-hashes, then
# Meldbot itself with --no-deps. Run this after changing a dependency in pyproject.toml and commit
# both files: tests/test_lock.py fails until they match pyproject.toml again.
#   deploy/lock.sh            keep every pin that still satisfies pyproject.toml (the smallest change)
#   deploy/lock.sh --upgrade  move every package to the newest version pyproject.toml allows
set -euo pipefail
cd "$(dirname "$0")/.."

# The lock tool, pinned: uv's resolver, installed from PyPI into a throw-away virtual environment.
UV_VERSION=0.13.9
PYTHON=${PYTHON:-python3}

upgrade=()
case "${1:-}" in
  "") ;;
  --upgrade) upgrade=(--upgrade) ;;
  *) echo "usage: deploy/lock.sh [--upgrade]" >&2; exit 2 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/tool"
"$work/tool/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
uv="$work/tool/bin/uv"

# The build backend (pyproject.toml [build-system] requires) is locked too, so that Meldbot itself
# is built with --no-build-isolation from hash-checked packages only.
build_requires=$("$PYTHON" - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as file:
    print("\n".join(tomllib.load(file)["build-system"]["requires"]))
PY
)

compile() {
  local output=$1
  shift
  # Only PyPI (uv reads no pip.conf): the hashes are those of the files PyPI serves, which a local
  # mirror of the same files matches.
  printf '%s\n' "$build_requires" | "$uv" pip compile --quiet pyproject.toml - "$@" "${upgrade[@]}" \
    --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
    --index-url https://pypi.org/simple --no-config \
    --custom-compile-command "deploy/lock.sh" --output-file "$output"
}

compile requirements.lock
compile requirements-test.lock --extra test --extra demo
echo "wrote requirements.lock ($(grep -c '^[a-z]' requirements.lock) packages) and requirements-test.lock ($(grep -c '^[a-z]' requirements-test.lock) packages) with uv $UV_VERSION"
