"""RabbitMQ tutorial 4 (routing) on pika: direct exchange, each queue gets exactly its severities."""
import os, signal, sys, uuid
import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: timeout", file=sys.stderr, flush=True), os._exit(1)))
signal.alarm(30)

BINDINGS = {"errors": ["error"], "all": ["info", "warning", "error"], "debug": ["debug"]}
SENT = ["info", "warning", "error", "critical", "info", "error", "debug"]  # "critical" is unroutable
exchange = f"interop-direct-{uuid.uuid4().hex[:8]}"
conn = pika.BlockingConnection(pika.URLParameters(URL))
ch = conn.channel()
ch.exchange_declare(exchange=exchange, exchange_type="direct")
try:
    queues = {}
    for name, severities in BINDINGS.items():
        queues[name] = ch.queue_declare(queue="", exclusive=True).method.queue
        for severity in severities:
            ch.queue_bind(exchange=exchange, queue=queues[name], routing_key=severity)
    for i, severity in enumerate(SENT):
        ch.basic_publish(exchange=exchange, routing_key=severity, body=f"{severity}:{i}".encode())
    for q in queues.values():  # end marker straight to each queue, after everything routed above
        ch.basic_publish(exchange="", routing_key=q, body=b"END")
    for name, q in queues.items():
        got = []
        for method, props, body in ch.consume(q, auto_ack=True):
            if body == b"END":
                break
            got.append(body.decode())
        ch.cancel()
        want = [f"{s}:{i}" for i, s in enumerate(SENT) if s in BINDINGS[name]]
        assert got == want, (name, got, want)
finally:
    ch.exchange_delete(exchange=exchange)
    conn.close()
print("ok")
