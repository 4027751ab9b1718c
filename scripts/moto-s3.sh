#!/usr/bin/env bash
# moto S3 (in-memory, fake) on 127.0.0.1 for the S3 store tests.
#
# Usage:  scripts/moto-s3.sh start    # start moto_server, wait until it answers
#         scripts/moto-s3.sh stop     # stop what 'start' started (by pid)
#         scripts/moto-s3.sh status
#
# Env:  MOTO_SERVER  the moto_server binary (default: the project venv's,
#                    .venv/bin/moto_server; install it with
#                    .venv/bin/pip install 'moto[server]')
#       MOTO_PORT    port (default 5055)
#       MOTO_BASE    pid and log dir (default ${TMPDIR:-/tmp}/glancetx-servers/moto)
#
# Then:  GLANCETX_MOTO_URL=http://127.0.0.1:$MOTO_PORT trial tests.test_store_s3
#
# moto does NOT check SigV4 signatures or payload hashes: a signing bug passes
# here and fails on a real S3.  The tests also run against Swift's S3 API
# (GLANCETX_SWIFT_S3_URL), which checks both.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=${MOTO_BASE:-${TMPDIR:-/tmp}/glancetx-servers/moto}
PORT=${MOTO_PORT:-5055}
MOTO=${MOTO_SERVER:-$ROOT/.venv/bin/moto_server}
PIDFILE=$BASE/moto-$PORT.pid
LOGFILE=$BASE/moto-$PORT.log

alive() {  # a zombie (exited, not yet reaped) counts as gone
    local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st#Z}" = "$st" ]
}

start() {
    if [ ! -x "$MOTO" ]; then
        echo "no moto_server at $MOTO (set MOTO_SERVER, or pip install 'moto[server]')" >&2
        exit 1
    fi
    mkdir -p "$BASE"
    if [ -f "$PIDFILE" ] && alive "$(cat "$PIDFILE")"; then
        echo "moto already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
        exit 0
    fi
    "$MOTO" -H 127.0.0.1 -p "$PORT" > "$LOGFILE" 2>&1 &
    echo $! > "$PIDFILE"
    for _ in $(seq 1 200); do
        if curl -fs -o /dev/null "http://127.0.0.1:$PORT/moto-api/"; then
            echo "moto up: GLANCETX_MOTO_URL=http://127.0.0.1:$PORT"
            exit 0
        fi
        alive "$(cat "$PIDFILE")" || break
        sleep 0.05
    done
    echo "moto did not start; log:" >&2
    cat "$LOGFILE" >&2
    stop
    exit 1
}

stop() {
    [ -f "$PIDFILE" ] || return 0
    local pid; pid=$(cat "$PIDFILE")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -f "$PIDFILE"
}

status() {
    if [ -f "$PIDFILE" ] && alive "$(cat "$PIDFILE")"; then
        echo "moto: running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
    else
        echo "moto: stopped"
        return 1
    fi
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
