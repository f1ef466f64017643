"""RabbitMQ tutorial 5 (topics) on pika: topic exchange with * and # bindings, exact set per queue."""
import os, signal, sys, uuid
import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: timeout", file=sys.stderr, flush=True), os._exit(1)))
signal.alarm(30)

BINDINGS = {"Q1": ["*.orange.*"], "Q2": ["*.*.rabbit", "lazy.#"], "all": ["#"]}
KEYS = ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "lazy.brown.fox",
        "lazy.pink.rabbit", "quick.brown.fox", "orange", "quick.orange.male.rabbit",
        "lazy.orange.male.rabbit", "lazy", ""]
EXPECTED = {
    "Q1": {"quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"},
    "Q2": {"quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox", "lazy.pink.rabbit",
           "lazy.orange.male.rabbit", "lazy"},
    "all": set(KEYS),
}
exchange = f"interop-topic-{uuid.uuid4().hex[:8]}"
conn = pika.BlockingConnection(pika.URLParameters(URL))
ch = conn.channel()
ch.exchange_declare(exchange=exchange, exchange_type="topic")
try:
    queues = {}
    for name, patterns in BINDINGS.items():
        queues[name] = ch.queue_declare(queue="", exclusive=True).method.queue
        for pattern in patterns:
            ch.queue_bind(exchange=exchange, queue=queues[name], routing_key=pattern)
    for key in KEYS:
        ch.basic_publish(exchange=exchange, routing_key=key, body=key.encode())
    for q in queues.values():  # end marker straight to each queue, after everything routed above
        ch.basic_publish(exchange="", routing_key=q, body=b"\x00END")
    for name, q in queues.items():
        got = []
        for method, props, body in ch.consume(q, auto_ack=True):
            if body == b"\x00END":
                break
            got.append(body.decode())
        ch.cancel()
        # a message matching several bindings of one queue is delivered to it once
        assert sorted(got) == sorted(EXPECTED[name]), (name, sorted(got), sorted(EXPECTED[name]))
finally:
    ch.exchange_delete(exchange=exchange)
    conn.close()
print("ok")
