#!/usr/bin/env bash
# Set up and run the whole system: the development broker, the API on :8080 (and :8081, the seeds'
# second port), live streams on :8082, the campaign dispatcher and the worker (both also relay the outbox).
# Ctrl-C stops everything.
# Database: SQLite in ./db.sqlite3 unless DATABASE_URL (or .env) names PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

mkdir -p run
python manage.py migrate --noinput -v0
python manage.py collectstatic --noinput -v0
pids=()
cleanup() {
    trap - INT TERM EXIT
    echo; echo "run-all: stopping"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

kafka=$(python -c 'from django.conf import settings; print(settings.KAFKA_BOOTSTRAP_SERVERS[0])' 2>/dev/null || echo 127.0.0.1:9092)
if ! (exec 3<>"/dev/tcp/${kafka%:*}/${kafka##*:}") 2>/dev/null; then
    python manage.py dev_broker --port "${kafka##*:}" > run/broker.log 2>&1 & pids+=($!)
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/${kafka%:*}/${kafka##*:}") 2>/dev/null && break; sleep 0.1; done
fi
python manage.py create_topics

token=$(python manage.py issue_token demo | tail -1)
admin_password=$(python -c 'import secrets; print(secrets.token_urlsafe(12))')
python manage.py shell -v 0 -c "
from django.contrib.auth import get_user_model
user, _ = get_user_model().objects.get_or_create(username='admin', defaults={'is_staff': True, 'is_superuser': True})
user.set_password('$admin_password'); user.save()"

# The dispatcher and the worker also relay the outbox: with the API they are the whole system.
for process in run_dispatcher run_worker; do
    python manage.py "$process" > "run/${process#run_}.log" 2>&1 & pids+=($!)
done
gunicorn notifications_project.wsgi --bind 127.0.0.1:8080 --bind 127.0.0.1:8081 --workers 2 \
    --access-logfile run/access.log > run/api.log 2>&1 & pids+=($!)
# The live streams (Server-Sent Events) under ASGI; the request/response API stays on sync workers.
uvicorn notifications_project.asgi:application --port 8082 --workers 1 > run/stream.log 2>&1 & pids+=($!)

cat <<MSG

Running. Logs in ./run/. Ctrl-C stops everything.
  API:      http://localhost:8080/api/v1/   docs: http://localhost:8080/api/docs/
  Admin:    http://localhost:8080/admin/    user: admin   password: $admin_password
  Token:    $token
Try:
  curl -X POST http://localhost:8080/send -H "Authorization: Token $token" -d "fromID=2&toID=1&message=Tito started following you."
  curl http://localhost:8081/notifications/1 -H "Authorization: Token $token"
  curl -N http://localhost:8082/api/v1/recipients/1/notifications/stream/ -H "Authorization: Token $token"
MSG
wait -n "${pids[@]}"
echo "run-all: a process exited; see ./run/*.log"
