#!/usr/bin/env bash
# Interop suite: RabbitMQ tutorials on pika and amqplib, kombu, celery, the
# management API (rabbitmqadmin, Prometheus), the web UI in headless Chromium; pika,
# aio-pika and amqplib over TLS as a user of a vhost of its own (Warren only:
# against AMQP_URL, the TLS scripts say they skip, as TLS_URL is unset).
#   AMQP_URL=amqp://... tests/interop/run.sh   run against a running broker
#   tests/interop/run.sh                        start ${WARREN_BIN:-target/debug/warren} on a free port
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$here"

# Python deps, reinstalled only when requirements.txt changes.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! cmp -s requirements.txt .venv/requirements.installed; then
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  cp requirements.txt .venv/requirements.installed
fi

# Headless Chromium and its driver, from Debian's packages, for the web
# UI's browser test (ui/browser.py).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }
fi

# Node deps, reinstalled only when package-lock.json changes.
if ! cmp -s package-lock.json node_modules/.package-lock.installed; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  cp package-lock.json node_modules/.package-lock.installed
fi

broker_pid=
data_dir=
log=$(mktemp)
cleanup() {
  if [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  if [ -n "$data_dir" ]; then rm -rf "$data_dir"; fi
  if [ -n "${alarm_pid:-}" ]; then kill -9 "$alarm_pid" 2>/dev/null || true; wait "$alarm_pid" 2>/dev/null || true; fi
  if [ -n "${alarm_dir:-}" ]; then rm -rf "$alarm_dir"; fi
  rm -f "$log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${AMQP_URL:-}" ]; then
  bin=${WARREN_BIN:-$repo/target/debug/warren}
  [ -x "$bin" ] || { echo "broker binary not found: $bin (build it or set WARREN_BIN / AMQP_URL)" >&2; exit 1; }
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  data_dir=$(mktemp -d)
  free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  management_port=$(free_port)
  tls_port=$(free_port)
  prometheus_port=$(free_port)
  # Certificates for the TLS listener: a CA, the server's for localhost,
  # and a client's whose common name is the interop user (for EXTERNAL).
  certs="$data_dir/certs"
  mkdir -p "$certs"
  command -v openssl >/dev/null || { echo "openssl is needed to make test certificates" >&2; exit 1; }
  (
    cd "$certs"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Warren interop CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    for who in server client; do
      case $who in
        server) subject=/CN=localhost; ext="subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth" ;;
        client) subject=/CN=interop-user; ext="extendedKeyUsage=clientAuth" ;;
      esac
      openssl req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$who.key" -out "$who.csr" 2>/dev/null
      openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile <(printf '%s\n' "$ext") -out "$who.pem" 2>/dev/null
    done
  )
  # The default listener's way: [::], dual-stack. The scripts reach it as
  # `localhost`, which Node resolves to ::1 first and Python to 127.0.0.1.
  "$bin" --bind "[::]:$port" --management-bind "127.0.0.1:$management_port" \
    --prometheus-bind "127.0.0.1:$prometheus_port" --collect-statistics-interval 1000 \
    --tls-bind "[::]:$tls_port" --tls-cert "$certs/server.pem" --tls-key "$certs/server.key" \
    --tls-ca "$certs/ca.pem" --auth-mechanisms PLAIN,AMQPLAIN,EXTERNAL --data-dir "$data_dir" >"$data_dir/broker.log" 2>&1 &
  broker_pid=$!
  deadline=$((SECONDS + 30))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! kill -0 "$broker_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      echo "broker did not start listening on 127.0.0.1:$port" >&2
      cat "$data_dir/broker.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  export AMQP_URL="amqp://guest:guest@localhost:$port/"
  # A user of its own on a vhost of its own, made with `warren ctl`, for
  # the TLS scripts.
  ctl() { "$bin" ctl --url "http://127.0.0.1:$management_port" "$@" >/dev/null; }
  ctl add_vhost interop
  ctl add_user interop-user interop-pass
  ctl set_permissions -p interop interop-user '.*' '.*' '.*'
  export TLS_URL="amqps://interop-user:interop-pass@localhost:$tls_port/interop"
  export TLS_CA="$certs/ca.pem" TLS_CLIENT_CERT="$certs/client.pem" TLS_CLIENT_KEY="$certs/client.key"
  export MANAGEMENT_URL="http://127.0.0.1:$management_port"
  export PROMETHEUS_URL="http://127.0.0.1:$prometheus_port"
fi
echo "broker: $AMQP_URL"

# A second broker whose memory alarm is always on, for pika/alarm/*.py.
alarm_pid=
alarm_dir=
if [ -z "${ALARM_URL:-}" ] && [ -n "$data_dir" ]; then
  alarm_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  alarm_dir=$(mktemp -d)
  "$bin" --bind "127.0.0.1:$alarm_port" --management-bind 127.0.0.1:0 --prometheus-bind 127.0.0.1:0 --data-dir "$alarm_dir" --memory-high-watermark 1B >"$alarm_dir/broker.log" 2>&1 &
  alarm_pid=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$alarm_port") 2>/dev/null; do
    kill -0 "$alarm_pid" 2>/dev/null || { cat "$alarm_dir/broker.log" >&2; exit 1; }
    sleep 0.1
  done
  export ALARM_URL="amqp://guest:guest@127.0.0.1:$alarm_port/"
fi

passed=0
failed=0
scripts="pika/*.py pika/work_queues/*.py amqplib/*.js kombu/*.py celery/run_*.py aio_pika/*.py rabbitmqadmin/*.py prometheus/*.py ui/*.py openapi/*.py"
if [ -n "${ALARM_URL:-}" ]; then scripts="$scripts pika/alarm/*.py"; fi
for script in $scripts; do
  case "$script" in
    *.py) runner=.venv/bin/python ;;
    *.js) runner=node ;;
  esac
  if timeout --kill-after=5 60 "$runner" "$script" >"$log" 2>&1; then
    echo "PASS $script"
    passed=$((passed + 1))
  else
    echo "FAIL $script (exit $?)"
    sed 's/^/    /' "$log" | tail -n 40
    failed=$((failed + 1))
  fi
done

# The broker this script started must stop on SIGTERM, closing every
# connection, and exit 0.
if [ -n "$broker_pid" ]; then
  kill -TERM "$broker_pid"
  rc=0
  for _ in $(seq 100); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$broker_pid" 2>/dev/null; then
    echo "warren did not stop within 10 s of SIGTERM" >&2
    kill -9 "$broker_pid"
  fi
  wait "$broker_pid" || rc=$?
  broker_pid=
  if [ "$rc" -eq 0 ]; then
    echo "PASS warren exits 0 on SIGTERM"
    passed=$((passed + 1))
  else
    echo "FAIL warren exits 0 on SIGTERM (exit $rc)"
    sed 's/^/    /' "$data_dir/broker.log" | tail -n 20
    failed=$((failed + 1))
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
