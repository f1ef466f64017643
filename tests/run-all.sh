#!/usr/bin/env bash
# Runs every test on a fresh machine: Rust unit and integration tests (lapin
# and raw sockets against an in-process broker, or AMQP_URL if set), then the
# pika / amqplib / kombu / celery suite against a freshly started `warren`
# (tests/interop/run.sh installs those clients under tests/interop/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --locked -p warren
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked
else
  cargo test --workspace --locked
fi
bash tests/interop/run.sh
