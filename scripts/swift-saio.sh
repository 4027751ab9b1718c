#!/usr/bin/env bash
# A single-node OpenStack Swift ("Swift All In One") on 127.0.0.1 for
# glancetx's tests: the Swift store driver's tests (tempauth, segmented large
# objects) and the S3 driver's tests (Swift's s3api, which checks SigV4
# signatures and payload hashes for real).
#   replicas=1, one device, tempauth (test:tester / testing), memcached,
#   s3api enabled (S3 access key "test:tester", secret "testing").
#
# Usage:  scripts/swift-saio.sh install   # apt-get the packages (Debian 12, as root), once
#         scripts/swift-saio.sh start     # write configs + rings, start, wait until serving
#         scripts/swift-saio.sh stop      # stop what 'start' started (by PID)
#         scripts/swift-saio.sh status
#         scripts/swift-saio.sh env       # print the env vars the tests read
#
# Then:   GLANCETX_SWIFT_AUTH_URL=http://127.0.0.1:8080/auth/v1.0 trial tests.test_store_swift
#
# No daemon is installed as a service: 'start' runs them in the background
# and records their PIDs under $SWIFT_BASE/run; 'stop' ends exactly those.
#
# Env:  SWIFT_PROXY_PORT (8080), SWIFT_OBJECT_PORT (6200), SWIFT_CONTAINER_PORT
#       (6201), SWIFT_ACCOUNT_PORT (6202), SWIFT_MEMCACHE_PORT (11211)
#       SWIFT_BASE   state/config dir (default ${TMPDIR:-/tmp}/glancetx-swift-<proxy port>,
#                    so two instances on different ports never share PID files)
#       SWIFT_BIN    dir holding swift-* binaries (default /usr/bin = Debian
#                    package; or a venv's bin after `pip install swift`)
#       MEMCACHED    memcached binary (default: memcached on PATH)
#       SWIFT_WORKERS  workers per server (default 1; 0 = no fork, less memory)
#       SWIFT_XFS=1  put the device on a loop-mounted sparse XFS image (root only;
#                    needs xfsprogs). Default: plain dir on the host fs, whose
#                    ~4 KB xattr limit (ext4) makes PUTs with >~3 KB of
#                    X-Object-Meta-* fail with 503 (ENOSPC in the object server).
#       SWIFT_XFS_SIZE sparse image size (default 8G)
set -euo pipefail

PROXY_PORT=${SWIFT_PROXY_PORT:-8080}
BASE=${SWIFT_BASE:-${TMPDIR:-/tmp}/glancetx-swift-$PROXY_PORT}
BIN=${SWIFT_BIN:-/usr/bin}
OBJ_PORT=${SWIFT_OBJECT_PORT:-6200}
CONT_PORT=${SWIFT_CONTAINER_PORT:-6201}
ACC_PORT=${SWIFT_ACCOUNT_PORT:-6202}
MC_PORT=${SWIFT_MEMCACHE_PORT:-11211}
MEMCACHED=${MEMCACHED:-memcached}
USE_XFS=${SWIFT_XFS:-0}
XFS_SIZE=${SWIFT_XFS_SIZE:-8G}
WORKERS=${SWIFT_WORKERS:-1}   # 0 = serve in the parent process (half the processes)
ETC=$BASE/etc
RUN=$BASE/run
LOG=$BASE/log
NODE=$BASE/srv/node
RUNAS=$(id -un)
# eventlet's green DNS (dnspython import) costs ~0.7 s per Python process on
# Debian 12; everything here is a literal 127.0.0.1, so skip it.
export EVENTLET_NO_GREENDNS=yes

install_pkgs() {
    if [ "$(id -u)" != 0 ]; then
        echo "install needs root (apt-get); run it with sudo" >&2; return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # policy-rc.d on this image keeps apt from starting the services itself.
    apt-get install -y -q swift swift-proxy swift-account swift-container \
        swift-object memcached python3-swiftclient attr xfsprogs curl \
        python3-keystonemiddleware
    # Alternative to the Debian swift packages (2.30.1): a venv, then
    # SWIFT_BIN=<venv>/bin:   python3 -m venv V && V/bin/pip install swift
    # (2.38.x, ~7 s; memcached still comes from apt).
}

write_configs() {
    mkdir -p "$ETC" "$RUN" "$LOG" "$NODE/d1"
    if [ "$USE_XFS" = 1 ] && ! mountpoint -q "$NODE/d1"; then
        truncate -s "$XFS_SIZE" "$BASE/xfs.img"
        mkfs.xfs -q -f "$BASE/xfs.img"
        mount -o loop,noatime "$BASE/xfs.img" "$NODE/d1"
    fi

    # Newer Swift (2.38.3 from PyPI, checked) reads swift.conf from swift_dir;
    # Debian 12's 2.30.1 always reads /etc/swift/swift.conf (the package ships
    # one with "changeme" hash prefix/suffix, which is fine for tests).
    # Write ours, and create /etc/swift/swift.conf only if it is missing.
    cat > "$ETC/swift.conf" <<EOF
[swift-hash]
swift_hash_path_prefix = saio-test-prefix
swift_hash_path_suffix = saio-test-suffix

[storage-policy:0]
name = Policy-0
default = yes
EOF
    if [ ! -e /etc/swift/swift.conf ]; then
        { mkdir -p /etc/swift && cp "$ETC/swift.conf" /etc/swift/swift.conf; } 2>/dev/null || true
    fi

    local common="[DEFAULT]
devices = $NODE
mount_check = false
disable_fallocate = true
bind_ip = 127.0.0.1
workers = $WORKERS
user = $RUNAS
swift_dir = $ETC
log_level = INFO"

    cat > "$ETC/account-server.conf" <<EOF
$common
bind_port = $ACC_PORT
log_name = account-server

[pipeline:main]
pipeline = account-server

[app:account-server]
use = egg:swift#account

[account-replicator]
[account-auditor]
[account-reaper]
EOF

    cat > "$ETC/container-server.conf" <<EOF
$common
bind_port = $CONT_PORT
log_name = container-server

[pipeline:main]
pipeline = container-server

[app:container-server]
use = egg:swift#container

[container-replicator]
[container-updater]
[container-auditor]
[container-sync]
[container-sharder]
EOF

    cat > "$ETC/object-server.conf" <<EOF
$common
bind_port = $OBJ_PORT
log_name = object-server

[pipeline:main]
pipeline = object-server

[app:object-server]
use = egg:swift#object

[object-replicator]
[object-reconstructor]
[object-updater]
[object-auditor]
EOF

    cat > "$ETC/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $PROXY_PORT
workers = $WORKERS
user = $RUNAS
swift_dir = $ETC
log_name = proxy-server
log_level = INFO

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl ratelimit s3api tempauth copy container-quotas account-quotas slo dlo versioned_writes symlink proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:tempauth]
use = egg:swift#tempauth
# user_<account>_<user> = <key> [groups...]
user_admin_admin = admin .admin .reseller_admin
user_test_tester = testing .admin
user_test2_tester2 = testing2 .admin
user_test_tester3 = testing3
user_glance_glance = glancepass .admin
storage_url_scheme = default

[filter:s3api]
use = egg:swift#s3api
location = us-east-1
# path-style only (no storage_domain => no virtual-host buckets)

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MC_PORT

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:tempurl]
use = egg:swift#tempurl
[filter:ratelimit]
use = egg:swift#ratelimit
[filter:copy]
use = egg:swift#copy
[filter:container-quotas]
use = egg:swift#container_quotas
[filter:account-quotas]
use = egg:swift#account_quotas
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_versioned_writes = true
[filter:symlink]
use = egg:swift#symlink
EOF
}

build_rings() {
    # part_power 10, replicas 1, min_part_hours 0; one device per ring.
    # The three rings are built in parallel (each swift-ring-builder call
    # costs ~0.4 s of Python start-up).
    local rb="$BIN/swift-ring-builder" r port pids=()
    rm -rf "$ETC/backups"
    for r in account container object; do
        case $r in account) port=$ACC_PORT;; container) port=$CONT_PORT;; object) port=$OBJ_PORT;; esac
        ( cd "$ETC"
          rm -f "$r.builder" "$r.ring.gz"
          "$rb" "$r.builder" create 10 1 0 >/dev/null
          "$rb" "$r.builder" add "r1z1-127.0.0.1:$port/d1" 100 >/dev/null
          # rebalance exits 1 for mere warnings
          "$rb" "$r.builder" rebalance >/dev/null || [ $? -eq 1 ] ) &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
}

wait_port() {  # wait_port PORT NAME
    local i
    for i in $(seq 1 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "timeout waiting for $2 on port $1; log:" >&2; tail -20 "$LOG/$2.log" >&2; return 1
}

start() {
    if [ -f "$RUN/proxy.pid" ] && alive "$(cat "$RUN/proxy.pid")"; then
        echo "swift already running from $BASE (pid $(cat "$RUN/proxy.pid")); stop it first" >&2
        return 1
    fi
    if [ ! -x "$BIN/swift-proxy-server" ]; then
        echo "no $BIN/swift-proxy-server: run '$0 install' (or set SWIFT_BIN)" >&2; return 1
    fi
    write_configs
    build_rings
    "$MEMCACHED" -l 127.0.0.1 -p "$MC_PORT" -U 0 -m 64 -u "$RUNAS" \
        > "$LOG/memcached.log" 2>&1 &
    echo $! > "$RUN/memcached.pid"
    local s
    for s in account container object proxy; do
        # foreground processes (no swift-init/daemonizing); -v logs to console
        "$BIN/swift-$s-server" "$ETC/$s-server.conf" -v > "$LOG/$s.log" 2>&1 &
        echo $! > "$RUN/$s.pid"
    done
    wait_port "$MC_PORT" memcached
    wait_port "$ACC_PORT" account
    wait_port "$CONT_PORT" container
    wait_port "$OBJ_PORT" object
    wait_port "$PROXY_PORT" proxy
    local i
    for i in $(seq 1 100); do
        if curl -fsS -o /dev/null -H 'X-Auth-User: test:tester' -H 'X-Auth-Key: testing' \
                "http://127.0.0.1:$PROXY_PORT/auth/v1.0"; then
            echo "swift SAIO up: http://127.0.0.1:$PROXY_PORT/auth/v1.0 (test:tester/testing)"
            env_vars
            return 0
        fi
        sleep 0.1
    done
    echo "swift did not answer auth requests" >&2; tail -30 "$LOG"/proxy.log >&2; return 1
}

alive() {  # a zombie (exited, not yet reaped by PID 1) counts as dead
    local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st#Z}" = "$st" ]
}

stop() {
    local s pid
    for s in proxy object container account memcached; do
        [ -f "$RUN/$s.pid" ] || continue
        pid=$(cat "$RUN/$s.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && kill -9 "$pid" 2>/dev/null || true
        rm -f "$RUN/$s.pid"
    done
    if mountpoint -q "$NODE/d1"; then umount "$NODE/d1" && rm -f "$BASE/xfs.img"; fi
}

env_vars() {
    echo "export GLANCETX_SWIFT_AUTH_URL=http://127.0.0.1:$PROXY_PORT/auth/v1.0"
    echo "export GLANCETX_SWIFT_S3_URL=http://127.0.0.1:$PROXY_PORT"
}

status() {
    local s
    for s in memcached account container object proxy; do
        if [ -f "$RUN/$s.pid" ] && alive "$(cat "$RUN/$s.pid")"; then
            echo "$s: running (pid $(cat "$RUN/$s.pid"))"
        else
            echo "$s: stopped"
        fi
    done
}

case "${1:-start}" in
    install) install_pkgs ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) env_vars ;;
    *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
