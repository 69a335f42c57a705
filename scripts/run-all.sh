#!/usr/bin/env bash
# Set up and run the whole system: the development broker, the API on :8080 (and :8081, the seeds'
# second port), live streams on :8082, the campaign dispatcher and the worker (both also relay the outbox).
# "Running" is printed once each of them answers. Ctrl-C or SIGTERM stops everything (the broker too)
# within 10 s, open streams or not. The demo token and the admin password are kept in ./run/.
# Database: SQLite in ./db.sqlite3 unless DATABASE_URL (or .env) names PostgreSQL.
# Ports: API_PORT (8080), SEED_PORT (8081), STREAM_PORT (8082); the broker's is KAFKA_BOOTSTRAP_SERVERS'.
# RUN_DIR (./run) holds the logs, the token and the password.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export DJANGO_SETTINGS_MODULE=notifications_project.settings

api_port=${API_PORT:-8080}; seed_port=${SEED_PORT:-8081}; stream_port=${STREAM_PORT:-8082}
run=${RUN_DIR:-run}
fail() { echo "run-all: $*" >&2; exit 1; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$api_port" "$seed_port" "$stream_port"; do
    port_busy "$port" && fail "port $port is already in use (another run-all?): stop what listens there (ss -ltnp 'sport = :$port')"
done

mkdir -p "$run"
python manage.py migrate --noinput -v0
python manage.py collectstatic --noinput -v0

pids=()
stopping=""
cleanup() {
    [ -n "$stopping" ] && return
    stopping=1
    trap - INT TERM
    echo; echo "run-all: stopping"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 80); do  # 8 s, then whatever is left is killed
        alive=""
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do  # what is still there, with its own children (the broker's Tansu)
        kill -0 "$pid" 2>/dev/null && { pkill -KILL -P "$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null; }
    done
    wait 2>/dev/null || true
    echo "run-all: stopped"
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

kafka=$(python -c 'from django.conf import settings; print(settings.KAFKA_BOOTSTRAP_SERVERS[0])')
kafka_host=${kafka%:*}; kafka_port=${kafka##*:}
broker_up() { (exec 3<>"/dev/tcp/$kafka_host/$kafka_port") 2>/dev/null; }
if broker_up; then
    echo "run-all: using the Kafka broker already answering on $kafka (not started, nor stopped, by this script)"
else
    python manage.py dev_broker --host "$kafka_host" --port "$kafka_port" > "$run/broker.log" 2>&1 & pids+=($!)
    for _ in $(seq 100); do broker_up && break; sleep 0.1; done
    broker_up || fail "the development broker did not start on $kafka: see $run/broker.log"
fi
python manage.py create_topics > /dev/null

# The same token and password every run: kept in run/ (delete those files for new ones).
token=$(python manage.py issue_token demo --key-file "$run/demo-token" | tail -1)
if [ ! -s "$run/admin-password" ]; then
    (umask 077; python -c 'import secrets; print(secrets.token_urlsafe(12))' > "$run/admin-password")
fi
ADMIN_PASSWORD=$(cat "$run/admin-password") python manage.py shell -v 0 -c "
import os
from django.contrib.auth import get_user_model
user, _ = get_user_model().objects.get_or_create(username='admin', defaults={'is_staff': True, 'is_superuser': True})
user.is_staff = user.is_superuser = True
user.set_password(os.environ['ADMIN_PASSWORD']); user.save()"
admin_password=$(cat "$run/admin-password")

# The API names the stream server in its 421s and the demo inbox page; that page (:8080) opens its
# stream on :8082, another origin, which CORS must allow (unless configured otherwise).
export STREAM_URL="http://localhost:$stream_port"
if [ -z "$(python -c 'from django.conf import settings; print(",".join(settings.CORS_ALLOWED_ORIGINS))')" ]; then
    export CORS_ALLOWED_ORIGINS="http://localhost:$api_port,http://127.0.0.1:$api_port,http://localhost:$seed_port,http://127.0.0.1:$seed_port"
fi

# The dispatcher and the worker also relay the outbox: with the API they are the whole system.
for process in run_dispatcher run_worker; do
    python manage.py "$process" > "$run/${process#run_}.log" 2>&1 & pids+=($!)
done
gunicorn notifications_project.wsgi --bind "127.0.0.1:$api_port" --bind "127.0.0.1:$seed_port" --workers 2 \
    --graceful-timeout 5 --access-logfile "$run/access.log" > "$run/api.log" 2>&1 & pids+=($!)
# The live streams (Server-Sent Events) under ASGI; the request/response API stays on sync workers.
# An open stream never holds the shutdown: uvicorn closes what is left after 2 s.
uvicorn notifications_project.asgi:application --port "$stream_port" --workers 1 --timeout-graceful-shutdown 2 \
    > "$run/stream.log" 2>&1 & pids+=($!)

answers() { python - "$@" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2).read()
except Exception:
    sys.exit(1)
PY
}
ready() {
    answers "http://127.0.0.1:$api_port/healthz" && answers "http://127.0.0.1:$seed_port/healthz" \
        && answers "http://127.0.0.1:$stream_port/healthz" \
        && grep -q "assigned [0-9]* partitions" "$run/worker.log" && grep -q "assigned [0-9]* partitions" "$run/dispatcher.log"
}
deadline=$((SECONDS + 90))
until ready; do
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || fail "a process exited while starting; see $run/*.log"
    done
    [ "$SECONDS" -ge "$deadline" ] && fail "not ready after 90 s; see $run/*.log"
    sleep 0.2
done

cat <<MSG

Running. Logs in $run/. Ctrl-C stops everything.
  Start:    http://localhost:$api_port/   (links to the docs, the admin and the demo inbox)
  API:      http://localhost:$api_port/api/v1/   docs: http://localhost:$api_port/api/docs/
  Admin:    http://localhost:$api_port/admin/    user: admin   password: $admin_password   (kept in $run/admin-password)
  Inbox:    http://localhost:$api_port/demo/inbox/?recipient=1   (log in to the admin first)
  Token:    $token   (kept in $run/demo-token)
Try:
  curl -X POST http://localhost:$api_port/send -H "Authorization: Token $token" -d "kind=follow&fromID=2&toID=1&message=Tito started following you."
  curl http://localhost:$seed_port/notifications/1 -H "Authorization: Token $token"
  curl -N http://localhost:$stream_port/api/v1/recipients/1/notifications/stream/ -H "Authorization: Token $token"
MSG
set +e
wait -n "${pids[@]}"
echo "run-all: a process exited; see $run/*.log"
exit 1
