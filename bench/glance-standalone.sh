#!/bin/bash
# Start the real OpenStack Glance (v2 API) standalone: no keystone, SQLite, filesystem store, uWSGI.
# usage: glance-standalone.sh [BASE_DIR=${BENCH_DIR:-/tmp/glancetx-bench}/glance-peer] [PORT=9292] [PROCESSES=2]
# Creates (if missing) BASE/glance-venv, BASE/glance-etc, BASE/glance-data, BASE/logs; runs db_sync; starts uWSGI
# in the background and prints the master PID (also in BASE/logs/glance-uwsgi.pid). Stop with: kill -TERM <master pid>
set -euo pipefail
BASE=${1:-${BENCH_DIR:-/tmp/glancetx-bench}/glance-peer}; PORT=${2:-9292}; PROCS=${3:-2}
V=$BASE/glance-venv; E=$BASE/glance-etc; D=$BASE/glance-data; L=$BASE/logs
mkdir -p $E $D/images $D/staging $D/tasks $L
if [ ! -x $V/bin/uwsgi ]; then
  python3 -m venv $V
  $V/bin/pip install -q -U pip setuptools wheel
  $V/bin/pip install -q glance==33.0.0 uWSGI==2.0.31     # uWSGI builds from source: needs gcc + Python headers
fi
cp $V/etc/glance/glance-api-paste.ini $E/glance-api-paste.ini
cat > $E/glance-api.conf <<CONF
[DEFAULT]
debug = False
log_file = $L/glance-api.log
enabled_backends = fs:file
image_cache_dir = $D/cache

[paste_deploy]
# no 'flavor' => pipeline 'default' => unauthenticated-context (no keystone)
config_file = $E/glance-api-paste.ini

[database]
connection = sqlite:///$D/glance.sqlite

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = $D/images/

[os_glance_staging_store]
filesystem_store_datadir = $D/staging/

[os_glance_tasks_store]
filesystem_store_datadir = $D/tasks/

[oslo_policy]
enforce_scope = False
enforce_new_defaults = False
CONF
cat > $E/glance-api-uwsgi.ini <<CONF
[uwsgi]
# modelled on devstack's write_local_uwsgi_http_config for glance-api
module = glance.wsgi.api:application
http-socket = 127.0.0.1:$PORT
processes = $PROCS
master = true
die-on-term = true
exit-on-reload = false
worker-reload-mercy = 90
enable-threads = true
thunder-lock = true
hook-master-start = unix_signal:15 gracefully_kill_them_all
buffer-size = 65535
add-header = Connection: close
lazy-apps = true
http-raw-body = true
http-chunked-input = true
http-auto-chunked = true
http-keepalive = false
socket-timeout = 30
env = OS_GLANCE_CONFIG_DIR=$E
pidfile = $L/glance-uwsgi.pid
CONF
OS_GLANCE_CONFIG_DIR=$E $V/bin/glance-manage --config-file $E/glance-api.conf db_sync > $L/db_sync.log 2>&1
nohup $V/bin/uwsgi --ini $E/glance-api-uwsgi.ini > $L/uwsgi.log 2>&1 &
for i in $(seq 1 60); do
  if curl -s -o /dev/null http://127.0.0.1:$PORT/v2/images; then break; fi; sleep 0.5
done
curl -s -o /dev/null -w "glance v2 on 127.0.0.1:$PORT -> HTTP %{http_code}\n" http://127.0.0.1:$PORT/v2/images
echo "uwsgi master pid: $(cat $L/glance-uwsgi.pid)"
