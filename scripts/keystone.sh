#!/usr/bin/env bash
# A real OpenStack Keystone (identity v3) on 127.0.0.1 for glancetx's Swift
# store tests with swift_store_auth_version=3: SQLite, fernet tokens, served
# by gunicorn (pure Python, no compiler needed), from a venv of its own.
#
#   bootstrap: admin/ADMIN_PASS in project admin, region RegionOne, identity
#   endpoints public/internal/admin; then project "service" with users
#   glance/glancepass (role member: a Swift operator role) and
#   swift/swiftpass (roles admin + service: what swift's authtoken uses to
#   validate tokens).
#
# Usage:  keystone.sh install     # venv + pip install keystone gunicorn (once; ~20 s;
#                                 # scripts/bootstrap --test makes .venv-keystone instead)
#         keystone.sh start       # write config, db_sync, keys, bootstrap, serve, wait
#         keystone.sh stop        # stop what 'start' started (by PID)
#         keystone.sh status
#         keystone.sh env         # the settings a Keystone-v3 swift store test needs
#         keystone.sh api METHOD PATH [JSON]   # admin-token call, prints JSON answer
#         keystone.sh object-store URL [INTERFACES] # (re)register object-store endpoints
#                                   URL like http://127.0.0.1:8081/v1/AUTH_%(project_id)s
#                                   INTERFACES default "public internal admin"
#
# No daemon is installed as a service: 'start' runs gunicorn in the
# background and records its PID under $KS_BASE/run; 'stop' ends exactly it.
# 'start' always begins from an empty database (a test fixture, not a server
# to keep), so every run has the same users and ids are new.
#
# Env:  KS_PORT        port (default 5000)
#       KS_BASE        state/config dir (default ${TMPDIR:-/tmp}/glancetx-keystone-<port>)
#       KS_VENV        venv holding keystone (default $KS_BASE/../glancetx-keystone-venv,
#                      i.e. shared by instances; 'install' creates it)
#       KS_PYTHON      python for the venv (default python3 on PATH;
#                      needs python3-venv)
#       KS_VERSION     pip requirement for keystone (default keystone==30.0.0, the release
#                      checked on Debian 12's Python 3.11; bump it deliberately)
#       KS_TOKEN_EXPIRATION  token lifetime in seconds (default 3600)
#       KS_WORKERS     gunicorn worker processes (default 1: the in-process cache,
#                      revocation events included, is then shared by all requests)
#       KS_THREADS     threads in each worker (default 4)
#       KS_ADMIN_PASS  (default admin), KS_GLANCE_PASS (glancepass), KS_SWIFT_PASS (swiftpass)
#       KS_CACHE       keystone's in-process cache (default true: token validation ~4x faster)
#       KS_SWIFT_URL   if set, 'start' registers it as the object-store endpoint
#       KS_KEEP=1      'start' keeps the database and keys of an earlier start (a restart:
#                      same users, ids and endpoints; tokens issued before stay valid);
#                      only keystone.conf is rewritten (e.g. a new KS_TOKEN_EXPIRATION)
set -euo pipefail

PORT=${KS_PORT:-5000}
BASE=${KS_BASE:-${TMPDIR:-/tmp}/glancetx-keystone-$PORT}
VENV=${KS_VENV:-$(dirname "$BASE")/glancetx-keystone-venv}
PY=${KS_PYTHON:-python3}
KS_REQ=${KS_VERSION:-keystone==30.0.0}
EXPIRATION=${KS_TOKEN_EXPIRATION:-3600}
WORKERS=${KS_WORKERS:-1}
THREADS=${KS_THREADS:-4}
ADMIN_PASS=${KS_ADMIN_PASS:-admin}
GLANCE_PASS=${KS_GLANCE_PASS:-glancepass}
SWIFT_PASS=${KS_SWIFT_PASS:-swiftpass}
ETC=$BASE/etc
RUN=$BASE/run
LOG=$BASE/log
URL=http://127.0.0.1:$PORT
KEEP=${KS_KEEP:-0}

alive() {  # a zombie (exited, not yet reaped) counts as dead
    local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st#Z}" = "$st" ]
}

install_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV" || {
            echo "cannot make a venv with $PY (Debian: apt-get install python3-venv)" >&2
            return 1; }
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check "$KS_REQ" gunicorn
    "$VENV/bin/pip" show keystone 2>/dev/null | sed -n 's/^Version: /keystone /p'
}

write_config() {
    mkdir -p "$ETC" "$RUN" "$LOG"
    if [ "$KEEP" != 1 ]; then
        rm -rf "$BASE/keystone.db" "$BASE/fernet-keys" "$BASE/credential-keys"
        mkdir -p "$BASE/fernet-keys" "$BASE/credential-keys"
        chmod 700 "$BASE/fernet-keys" "$BASE/credential-keys"
    fi
    cat > "$ETC/keystone.conf" <<EOF
[DEFAULT]
debug = false
use_stderr = true
log_file =

[database]
connection = sqlite:///$BASE/keystone.db

[token]
provider = fernet
expiration = $EXPIRATION

[fernet_tokens]
key_repository = $BASE/fernet-keys
max_active_keys = 3

[credential]
key_repository = $BASE/credential-keys

[cache]
enabled = ${KS_CACHE:-true}
backend = dogpile.cache.memory

[oslo_policy]
enforce_scope = false
enforce_new_defaults = false
EOF
}

manage() {
    "$VENV/bin/keystone-manage" --config-file "$ETC/keystone.conf" "$@"
}

# A tiny admin client (stdlib only), used after bootstrap.
write_client() {
    cat > "$BASE/ksapi.py" <<'EOF'
import json, os, sys, urllib.request, urllib.error
URL = os.environ["KS_URL"]

def call(method, path, body=None, token=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, r.headers, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, e.headers, json.loads(raw)
        except ValueError:
            return e.code, e.headers, raw.decode("latin-1")

def admin_token():
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"name": "Default"},
        "password": os.environ["KS_ADMIN_PASS"]}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}
    code, headers, _ = call("POST", "/v3/auth/tokens", body)
    if code != 201:
        sys.exit("admin auth failed: %s" % code)
    return headers["X-Subject-Token"]

def find(tok, kind, name):
    code, _, ans = call("GET", "/v3/%s?name=%s" % (kind, name), token=tok)
    items = ans[kind] if code == 200 else []
    return items[0]["id"] if items else None

def ensure(tok, kind, name, body):
    ident = find(tok, kind, name)
    if ident:
        return ident
    code, _, ans = call("POST", "/v3/" + kind, {kind[:-1]: body}, token=tok)
    if code != 201:
        sys.exit("create %s %s: %s %s" % (kind, name, code, ans))
    return ans[kind[:-1]]["id"]

def grant(tok, project, user, role):
    code, _, ans = call("PUT", "/v3/projects/%s/users/%s/roles/%s" % (project, user, role),
                        token=tok)
    if code not in (200, 204):
        sys.exit("grant %s: %s %s" % (role, code, ans))

def setup(tok):
    svc = ensure(tok, "projects", "service", {"name": "service", "domain_id": "default"})
    roles = {r: ensure(tok, "roles", r, {"name": r}) for r in ("admin", "member", "service")}
    glance = ensure(tok, "users", "glance", {"name": "glance", "domain_id": "default",
                                             "password": os.environ["KS_GLANCE_PASS"]})
    swift = ensure(tok, "users", "swift", {"name": "swift", "domain_id": "default",
                                           "password": os.environ["KS_SWIFT_PASS"]})
    grant(tok, svc, glance, roles["member"])
    grant(tok, svc, swift, roles["admin"])
    grant(tok, svc, swift, roles["service"])
    print("service project %s" % svc)

def object_store(tok, url, interfaces):
    svc = None
    code, _, ans = call("GET", "/v3/services?type=object-store", token=tok)
    for s in ans["services"]:
        svc = s["id"]
    if svc is None:
        code, _, ans = call("POST", "/v3/services", {"service": {
            "type": "object-store", "name": "swift", "enabled": True}}, token=tok)
        svc = ans["service"]["id"]
    code, _, ans = call("GET", "/v3/endpoints?service_id=" + svc, token=tok)
    for e in ans["endpoints"]:
        call("DELETE", "/v3/endpoints/" + e["id"], token=tok)
    for iface in interfaces:
        code, _, ans = call("POST", "/v3/endpoints", {"endpoint": {
            "service_id": svc, "interface": iface, "url": url,
            "region_id": "RegionOne", "enabled": True}}, token=tok)
        if code != 201:
            sys.exit("endpoint %s: %s %s" % (iface, code, ans))

def main():
    cmd = sys.argv[1]
    tok = admin_token()
    if cmd == "setup":
        setup(tok)
    elif cmd == "object-store":
        object_store(tok, sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else
                                        "public internal admin").split())
    elif cmd == "api":
        body = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
        hdrs = json.loads(sys.argv[5]) if len(sys.argv) > 5 else None
        code, _, ans = call(sys.argv[2], sys.argv[3], body, token=tok, headers=hdrs)
        print(code)
        if ans is not None:
            print(json.dumps(ans, indent=1))
    elif cmd == "token":
        print(tok)

main()
EOF
}

client() {
    KS_URL=$URL KS_ADMIN_PASS=$ADMIN_PASS KS_GLANCE_PASS=$GLANCE_PASS \
        KS_SWIFT_PASS=$SWIFT_PASS "$VENV/bin/python" "$BASE/ksapi.py" "$@"
}

wait_http() {
    local i
    for i in $(seq 1 600); do
        if curl -fsS --max-time 5 -o /dev/null "$URL/v3" 2>/dev/null; then return 0; fi
        alive "$(cat "$RUN/keystone.pid")" || break
        sleep 0.1
    done
    echo "keystone did not answer on $URL; log:" >&2; tail -30 "$LOG/keystone.log" >&2
    return 1
}

start() {
    if [ -f "$RUN/keystone.pid" ] && alive "$(cat "$RUN/keystone.pid")"; then
        echo "keystone already running from $BASE (pid $(cat "$RUN/keystone.pid")); stop it first" >&2
        return 1
    fi
    if [ ! -x "$VENV/bin/keystone-manage" ] || [ ! -x "$VENV/bin/gunicorn" ]; then
        echo "no keystone in $VENV: run '$0 install' (or set KS_VENV)" >&2; return 1
    fi
    if [ "$KEEP" = 1 ] && [ ! -f "$BASE/keystone.db" ]; then KEEP=0; fi
    write_config
    write_client
    if [ "$KEEP" != 1 ]; then
    manage db_sync
    manage fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
    manage credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
    manage bootstrap --bootstrap-password "$ADMIN_PASS" \
        --bootstrap-admin-url "$URL/v3" --bootstrap-internal-url "$URL/v3" \
        --bootstrap-public-url "$URL/v3" --bootstrap-region-id RegionOne \
        > "$LOG/bootstrap.log" 2>&1
    fi
    # oslo.config parses sys.argv when keystone loads: hide gunicorn's.
    printf '%s\n' 'import sys' 'sys.argv = sys.argv[:1]' \
        'from keystone.wsgi.api import application  # noqa' > "$BASE/keystone_wsgi.py"
    OS_KEYSTONE_CONFIG_FILES=$ETC/keystone.conf PYTHONPATH=$BASE \
        "$VENV/bin/gunicorn" --bind "127.0.0.1:$PORT" --workers "$WORKERS" --threads "$THREADS" \
        --no-control-socket --timeout 120 --access-logfile - \
        --name "keystone-$PORT" keystone_wsgi:application > "$LOG/keystone.log" 2>&1 &
    echo $! > "$RUN/keystone.pid"
    wait_http
    [ "$KEEP" = 1 ] || client setup
    if [ -n "${KS_SWIFT_URL:-}" ]; then client object-store "$KS_SWIFT_URL"; fi
    echo "keystone up: $URL/v3 (admin/$ADMIN_PASS; service project: glance/$GLANCE_PASS)"
    env_vars
}

stop() {
    [ -f "$RUN/keystone.pid" ] || return 0
    local pid; pid=$(cat "$RUN/keystone.pid")
    kill "$pid" 2>/dev/null || true   # gunicorn's master ends its workers
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -f "$RUN/keystone.pid"
}

status() {
    if [ -f "$RUN/keystone.pid" ] && alive "$(cat "$RUN/keystone.pid")"; then
        echo "keystone: running (pid $(cat "$RUN/keystone.pid")) on $URL"
    else
        echo "keystone: stopped"; return 1
    fi
}

env_vars() {
    echo "export GLANCETX_KEYSTONE_URL=$URL/v3"
    echo "export GLANCETX_KEYSTONE_PROJECT=service GLANCETX_KEYSTONE_USER=glance GLANCETX_KEYSTONE_KEY=$GLANCE_PASS"
}

case "${1:-start}" in
    install) install_venv ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) env_vars ;;
    api) shift; client api "$@" ;;
    token) client token ;;
    object-store) shift; client object-store "$@" ;;
    *) echo "usage: $0 install|start|stop|status|env|api|token|object-store" >&2; exit 2 ;;
esac
