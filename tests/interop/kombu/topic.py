"""kombu topic exchange: a Producer publishes with several routing keys, Consumers read queues bound with patterns."""
import os, signal, sys, uuid
from kombu import Connection, Consumer, Exchange, Producer, Queue, binding

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: timeout", file=sys.stderr, flush=True), os._exit(1)))
signal.alarm(30)

run = uuid.uuid4().hex[:8]
exchange = Exchange(f"interop-kombu-{run}", type="topic", durable=False)
PATTERNS = {"usa": ["usa.#"], "news": ["*.news"], "weather": ["*.weather", "europe.#"]}
KEYS = ["usa.news", "usa.weather", "europe.news", "europe.weather", "asia.news", "usa",
        "usa.news.sports", "asia.weather.today", "europe"]
EXPECTED = {
    "usa": {"usa.news", "usa.weather", "usa", "usa.news.sports"},
    "news": {"usa.news", "europe.news", "asia.news"},
    "weather": {"usa.weather", "europe.weather", "europe.news", "europe"},
}
queues = {name: Queue(f"interop-kombu-{run}-{name}", exchange=exchange, durable=False, auto_delete=True,
                      bindings=[binding(exchange, routing_key=p) for p in patterns])
          for name, patterns in PATTERNS.items()}
got = {name: set() for name in queues}
ended = set()


def collector(name):
    def on_message(body, message):
        if body["end"]:  # end marker, sent straight to the queue after everything else
            ended.add(name)
        else:
            got[name].add(body["key"])
        message.ack()
    return on_message


with Connection(URL) as conn:
    channel = conn.channel()
    try:
        consumers = [Consumer(channel, queues=[q], callbacks=[collector(name)], accept=["json"],
                          tag_prefix=f"{name}-")  # consumer tags must differ on one channel
                     for name, q in queues.items()]
        for consumer in consumers:
            consumer.consume()  # declares the queue and its bindings, then basic.consume
        producer = Producer(channel, exchange=exchange, serializer="json")
        for key in KEYS:
            producer.publish({"key": key, "end": False}, routing_key=key)
        for q in queues.values():  # via the default exchange (a Producer without one)
            Producer(channel, serializer="json").publish({"end": True}, routing_key=q.name)
        while len(ended) < len(queues):
            conn.drain_events(timeout=10)
        for consumer in consumers:
            consumer.cancel()
        for name in queues:
            assert got[name] == EXPECTED[name], (name, sorted(got[name]), sorted(EXPECTED[name]))
    finally:
        for q in queues.values():
            q(channel).delete()
        exchange(channel).delete()
print("ok")
