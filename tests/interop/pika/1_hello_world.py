"""RabbitMQ tutorial 1 (hello world) on pika: publish one message to a queue and consume it."""
import os, signal, sys, uuid
import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: timeout", file=sys.stderr, flush=True), os._exit(1)))
signal.alarm(30)

queue = f"interop-hello-{uuid.uuid4().hex[:8]}"
conn = pika.BlockingConnection(pika.URLParameters(URL))
ch = conn.channel()
try:
    ch.queue_declare(queue=queue)
    ch.basic_publish(exchange="", routing_key=queue, body=b"Hello World!")
    for method, props, body in ch.consume(queue, auto_ack=True):
        assert body == b"Hello World!", body
        break
    ch.cancel()
    assert ch.queue_declare(queue=queue, passive=True).method.message_count == 0
finally:
    ch.queue_delete(queue=queue)
    conn.close()
print("ok")
