"""connection.update-secret on pika (the OAuth token refresh path): the
broker answers update-secret-ok and the connection goes on serving, as
RabbitMQ does for its internal users (probed on 3.10.8)."""
import os, signal, sys, uuid
import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: timeout", file=sys.stderr, flush=True), os._exit(1)))
signal.alarm(30)

queue = f"interop-update-secret-{uuid.uuid4().hex[:8]}"
conn = pika.BlockingConnection(pika.URLParameters(URL))
ch = conn.channel()
ch.queue_declare(queue, exclusive=True)
for n in range(3):
    # Blocks until update-secret-ok arrives; raises if the broker closes.
    conn.update_secret(f"refreshed-token-{n}", "token refresh")
    ch.basic_publish("", queue, f"after refresh {n}".encode())
    method, _, body = ch.basic_get(queue, auto_ack=True)
    assert body == f"after refresh {n}".encode(), body
assert conn.is_open
conn.close()
print("PASS")
