"""RabbitMQ tutorial 2 (work queues) on pika: two competing consumers, manual ack, prefetch 1.

Fair dispatch check: whichever worker gets a task first keeps it unacked ("busy"); with
prefetch 1 the broker must then hand every other task to the second worker.
"""
import os, signal, sys, uuid
import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: timeout", file=sys.stderr, flush=True), os._exit(1)))
signal.alarm(30)

N = 10
queue = f"interop-task-{uuid.uuid4().hex[:8]}"
conn = pika.BlockingConnection(pika.URLParameters(URL))
producer = conn.channel()
producer.queue_declare(queue=queue, durable=True)
try:
    got = {"A": [], "B": []}
    held = []  # (worker, channel, delivery_tag) of the one task kept unacked
    acked = []

    def worker(name, ch):
        def on_message(_ch, method, _props, body):
            got[name].append(body.decode())
            if not held:
                held.append((name, ch, method.delivery_tag))  # busy: don't ack yet
            else:
                ch.basic_ack(method.delivery_tag)
                acked.append(body)
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(queue=queue, on_message_callback=on_message)
        return ch

    chans = [worker("A", conn.channel()), worker("B", conn.channel())]
    for i in range(N):
        producer.basic_publish(exchange="", routing_key=queue, body=f"task {i}".encode(),
                               properties=pika.BasicProperties(delivery_mode=2))
    while len(acked) < N - 1:
        conn.process_data_events(time_limit=1)
    busy, busy_ch, tag = held[0]
    busy_ch.basic_ack(tag)
    idle = "B" if busy == "A" else "A"
    assert len(got[busy]) == 1 and len(got[idle]) == N - 1, got
    assert sorted(got["A"] + got["B"]) == sorted(f"task {i}" for i in range(N)), got
    for ch in chans:
        ch.close()  # would requeue anything unacked
    assert producer.queue_declare(queue=queue, passive=True).method.message_count == 0
finally:
    producer.queue_delete(queue=queue)
    conn.close()
print("ok", {k: len(v) for k, v in got.items()})
