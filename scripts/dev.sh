#!/usr/bin/env bash
# Set-up and everyday commands in one place. The README's two commands are `./scripts/dev.sh run` and
# `./scripts/dev.sh test`; each creates the virtual environment (.venv) and installs what it needs first.
#   run   [streamlit args]  start the app on http://localhost:8501
#   test  [pytest args]     the whole test suite: unit, AppTest and real-browser (Chromium) tests
#   lint                    ruff check + ruff format --check
#   bench NAME [args]       a benchmark from bench/, e.g. `bench data_load`
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=$VENV/bin/python

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "error: '$*' needs root; run it as root, then run this command again." >&2; return 1
  fi
}

apt_install() {
  echo ">> installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_venv() {
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python 3.11 or newer is needed as python3 (found: $(python3 --version 2>&1))." >&2
    exit 1
  fi
  if [ ! -x "$PY" ]; then
    echo ">> creating the virtual environment $VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      apt_install python3-venv
      python3 -m venv "$VENV"
    fi
  fi
}

# Install a requirements file (and the project, editable) once; again only when the inputs changed.
ensure_packages() {
  local req=$1
  local stamp="$VENV/.installed-$(basename "$req")"
  if [ ! -f "$stamp" ] || [ -n "$(find requirements*.txt pyproject.toml -newer "$stamp")" ]; then
    echo ">> installing Python packages from $req (the first time takes a few minutes)"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -r "$req"
    "$PY" -m pip install -q --no-deps -e .
    touch "$stamp"
  fi
}

ensure_chromium() {
  local chromium=${CHROMIUM_PATH:-/usr/bin/chromium}
  [ -x "$chromium" ] || apt_install chromium
}

# Fashion-MNIST: found locally (FASHION_MNIST_DIR, the checkout, Debian's package, the Keras cache) or
# downloaded; when neither works (no internet), Debian's package is installed, as Chromium is.
ensure_data() {
  "$PY" -m fashion_lib data >/dev/null 2>&1 && return 0
  echo ">> Fashion-MNIST was not found and could not be downloaded: installing Debian's dataset-fashion-mnist"
  apt_install dataset-fashion-mnist
  "$PY" -m fashion_lib data >/dev/null
}

# The tuning tests start a real PostgreSQL server (a temporary one, on a free port) from Debian's package.
ensure_postgresql() {
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_install postgresql
}

cmd=${1:-}
shift || true
case "$cmd" in
  run)
    ensure_venv
    ensure_packages requirements.txt
    ensure_data || echo ">> still no Fashion-MNIST: the app will say how to provide it"
    port=8501  # unless the arguments name another (--server.port N or --server.port=N)
    previous=""
    for arg in "$@"; do
      case "$arg" in --server.port=*) port=${arg#--server.port=} ;; esac
      [ "$previous" = --server.port ] && port=$arg
      previous=$arg
    done
    echo ">> the app will answer on http://localhost:$port"
    exec "$PY" -m streamlit run app/main.py --server.port 8501 "$@"
    ;;
  test)
    ensure_venv
    ensure_packages requirements-dev.txt
    ensure_chromium
    ensure_postgresql
    ensure_data
    exec "$PY" -m pytest "$@"
    ;;
  lint)
    ensure_venv
    ensure_packages requirements-dev.txt
    "$PY" -m ruff check .
    "$PY" -m ruff format --check .
    ;;
  bench)
    ensure_venv
    ensure_packages requirements.txt
    name=${1:?usage: $0 bench NAME [args]}
    shift
    exec "$PY" -m "bench.$name" "$@"
    ;;
  *)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
