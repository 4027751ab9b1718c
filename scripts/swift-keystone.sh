#!/usr/bin/env bash
# A second Swift proxy that validates Keystone tokens (keystonemiddleware
# authtoken + Swift's keystoneauth), beside a SAIO started by
# scripts/swift-saio.sh (same rings, devices, memcached), and its endpoint
# registered in the Keystone started by keystone.sh (same env).
#
# Usage:  swift-keystone.sh install  # apt-get python3-keystonemiddleware (root, once)
#         swift-keystone.sh start    # SAIO + keystone must be up already
#         swift-keystone.sh stop
#         swift-keystone.sh status
#
# Env:  SWIFT_BASE, SWIFT_PROXY_PORT (as for swift-saio.sh: finds its configs),
#       SWIFT_MEMCACHE_PORT (11211), SWIFT_BIN (/usr/bin)
#       SWIFT_KS_PROXY_PORT  this proxy's port (default 8081)
#       SWIFT_KS_TOKEN_CACHE authtoken token_cache_time (default -1: validate every
#                            request, so a revoked token is refused at once)
#       KS_PORT, KS_BASE, KS_VENV, KS_SWIFT_PASS ... as for keystone.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PROXY_PORT=${SWIFT_PROXY_PORT:-8080}
BASE=${SWIFT_BASE:-${TMPDIR:-/tmp}/glancetx-swift-$PROXY_PORT}
BIN=${SWIFT_BIN:-/usr/bin}
MC_PORT=${SWIFT_MEMCACHE_PORT:-11211}
KS_PROXY_PORT=${SWIFT_KS_PROXY_PORT:-8081}
TOKEN_CACHE=${SWIFT_KS_TOKEN_CACHE:--1}
KSURL=http://127.0.0.1:${KS_PORT:-5000}
SWIFT_PASS=${KS_SWIFT_PASS:-swiftpass}
ETC=$BASE/etc RUN=$BASE/run LOG=$BASE/log
export EVENTLET_NO_GREENDNS=yes

alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st#Z}" = "$st" ]; }

start() {
    [ -f "$ETC/proxy-server.conf" ] || { echo "no SAIO in $BASE: run swift-saio.sh start" >&2; return 1; }
    if [ -f "$RUN/proxy-ks.pid" ] && alive "$(cat "$RUN/proxy-ks.pid")"; then
        echo "keystone proxy already running" >&2; return 1
    fi
    # The all-in-one's proxy, with Keystone's token check in place of
    # tempauth (and of s3api, which would need Keystone's s3token).
    sed -e "s/^bind_port = .*/bind_port = $KS_PROXY_PORT/" \
        -e "s/^log_name = proxy-server\$/log_name = proxy-server-ks/" \
        -e "/^pipeline = /s/ s3api tempauth / authtoken keystoneauth /" \
        "$ETC/proxy-server.conf" > "$ETC/proxy-server-ks.conf"
    grep -q "^pipeline = .* authtoken keystoneauth " "$ETC/proxy-server-ks.conf" || {
        echo "the all-in-one's proxy pipeline has no 's3api tempauth' to replace" >&2
        return 1; }
    cat >> "$ETC/proxy-server-ks.conf" <<EOF

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = $KSURL
auth_url = $KSURL
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = swift
password = $SWIFT_PASS
delay_auth_decision = True
token_cache_time = $TOKEN_CACHE
include_service_catalog = False
http_connect_timeout = 5
http_request_max_retries = 1

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
reseller_admin_role = ResellerAdmin
EOF
    "$BIN/swift-proxy-server" "$ETC/proxy-server-ks.conf" -v > "$LOG/proxy-ks.log" 2>&1 &
    echo $! > "$RUN/proxy-ks.pid"
    local i
    for i in $(seq 1 300); do
        if curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$KS_PROXY_PORT/healthcheck" 2>/dev/null; then
            "$HERE/keystone.sh" object-store "http://127.0.0.1:$KS_PROXY_PORT/v1/AUTH_%(project_id)s"
            echo "swift keystone proxy up: http://127.0.0.1:$KS_PROXY_PORT (object-store endpoint registered)"
            return 0
        fi
        alive "$(cat "$RUN/proxy-ks.pid")" || break
        sleep 0.1
    done
    echo "keystone proxy did not start; log:" >&2; tail -30 "$LOG/proxy-ks.log" >&2; return 1
}

stop() {
    [ -f "$RUN/proxy-ks.pid" ] || return 0
    local pid; pid=$(cat "$RUN/proxy-ks.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -9 "$pid" 2>/dev/null || true
    rm -f "$RUN/proxy-ks.pid"
}

case "${1:-start}" in
    install) DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-keystonemiddleware ;;
    start) start ;;
    stop) stop ;;
    status) if [ -f "$RUN/proxy-ks.pid" ] && alive "$(cat "$RUN/proxy-ks.pid")"; then
                echo "proxy-ks: running"; else echo "proxy-ks: stopped"; fi ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
