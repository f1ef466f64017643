"""RabbitMQ tutorial 3 (publish/subscribe) on pika: fanout exchange, two exclusive server-named queues."""
import os, signal, sys, uuid
import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: timeout", file=sys.stderr, flush=True), os._exit(1)))
signal.alarm(30)

N = 5
exchange = f"interop-logs-{uuid.uuid4().hex[:8]}"
conn = pika.BlockingConnection(pika.URLParameters(URL))
ch = conn.channel()
ch.exchange_declare(exchange=exchange, exchange_type="fanout")
try:
    queues = []
    for _ in range(2):
        q = ch.queue_declare(queue="", exclusive=True).method.queue
        assert q, "server did not name the queue"
        ch.queue_bind(exchange=exchange, queue=q)
        queues.append(q)
    assert queues[0] != queues[1], queues
    sent = [f"log {i}" for i in range(N)]
    for body in sent:
        ch.basic_publish(exchange=exchange, routing_key="", body=body.encode())
    for q in queues:
        got = []
        for method, props, body in ch.consume(q, auto_ack=True):
            got.append(body.decode())
            if len(got) == N:
                break
        ch.cancel()
        assert got == sent, (q, got)
        assert ch.queue_declare(queue=q, passive=True).method.message_count == 0
finally:
    ch.exchange_delete(exchange=exchange)
    conn.close()  # exclusive queues go with the connection
print("ok")
