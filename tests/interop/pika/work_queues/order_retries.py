"""Order processing with retries and backoff, on pika. A failed order is
retried after 1 s, 2 s and 4 s; after three retries the worker rejects it,
and the order queue dead-letters it to a failed-orders queue.

The backoff is built one of two ways, as RabbitMQ users build it:
- with the x-delayed-message exchange (the community plugin's, which
  Warren has built in): the worker republishes the order to it with
  `x-delay` set to the backoff and a retry count in its headers;
- without it (a RabbitMQ without the plugin, such as the reference): from
  TTL and dead-lettering. The order is parked in a wait queue whose
  x-message-ttl is the backoff; when it expires there, it is dead-lettered
  back to the order queue, and the x-death counts tell the worker how many
  tries it has had.
Checks: the backoff between tries, the retry counting, and what reaches the
failed-orders queue (x-death reason 'rejected')."""
import os, signal, sys, time, uuid
import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: timeout", file=sys.stderr, flush=True), os._exit(1)))
signal.alarm(45)

def has_delayed_exchange():
    """Whether the broker takes the x-delayed-message type: asked on a
    connection of its own, since RabbitMQ 3.10 closes the connection for an
    unknown exchange type."""
    probe = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        name = f"interop-delayed-probe-{uuid.uuid4().hex[:8]}"
        pch = probe.channel()
        pch.exchange_declare(name, "x-delayed-message", arguments={"x-delayed-type": "direct"})
        pch.exchange_delete(name)
        return True
    except pika.exceptions.AMQPError:
        return False
    finally:
        if probe.is_open:
            probe.close()

DELAYED = has_delayed_exchange()
print("backoff through", "the x-delayed-message exchange" if DELAYED else "TTL wait queues")
tag = uuid.uuid4().hex[:8]
orders, failed = f"interop-orders-{tag}", f"interop-orders-failed-{tag}"
waits = {delay: f"interop-orders-wait-{delay}s-{tag}" for delay in (1, 2, 4)}
conn = pika.BlockingConnection(pika.URLParameters(URL))
ch = conn.channel()
ch.queue_declare(failed, exclusive=True)
ch.queue_declare(orders, exclusive=True, arguments={
    "x-dead-letter-exchange": "", "x-dead-letter-routing-key": failed})
retry = f"interop-orders-retry-{tag}"
if DELAYED:
    ch.exchange_declare(retry, "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    ch.queue_bind(orders, retry, routing_key=orders)
else:
    for delay, name in waits.items():
        ch.queue_declare(name, exclusive=True, arguments={
            "x-message-ttl": delay * 1000,
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": orders})

def tries(props):
    """Retries so far: the worker's count, or how often the message expired
    in a wait queue."""
    if DELAYED:
        return (props.headers or {}).get("retries", 0)
    deaths = (props.headers or {}).get("x-death", [])
    return sum(d["count"] for d in deaths if d["queue"] in waits.values() and d["reason"] == "expired")

ch.basic_publish("", orders, b"order-42 (card declined)",
                 pika.BasicProperties(delivery_mode=2, headers={"order-id": 42}))
ch.basic_publish("", orders, b"order-43", pika.BasicProperties(delivery_mode=2, headers={"order-id": 43}))

seen = []  # (order, try, time)
done = set()
start = time.time()
def on_order(ch, method, props, body):
    order = props.headers["order-id"]
    n = tries(props)
    seen.append((order, n, time.time() - start))
    if b"declined" not in body:
        done.add(order)
        ch.basic_ack(method.delivery_tag)
    elif n < 3:
        # Hold it for 1, 2 then 4 s, then let the broker bring it back.
        delay = 2 ** n
        if DELAYED:
            props.headers.update({"x-delay": delay * 1000, "retries": n + 1})
            ch.basic_publish(retry, orders, body, props)
        else:
            ch.basic_publish("", waits[delay], body, props)
        ch.basic_ack(method.delivery_tag)
    else:
        ch.basic_reject(method.delivery_tag, requeue=False)

ch.basic_consume(orders, on_order)
deadline = time.time() + 20
while time.time() < deadline:
    conn.process_data_events(time_limit=0.2)
    if ch.queue_declare(failed, passive=True).method.message_count:
        break

assert done == {43}, done
tries_42 = [(n, t) for order, n, t in seen if order == 42]
assert [n for n, _ in tries_42] == [0, 1, 2, 3], tries_42
# Each retry came back no sooner than its backoff.
for (n, t), (_, t_next) in zip(tries_42, tries_42[1:]):
    assert t_next - t >= 2 ** n - 0.05, (n, t, t_next)

method, props, body = ch.basic_get(failed, auto_ack=True)
assert body == b"order-42 (card declined)" and props.headers["order-id"] == 42
assert props.headers["x-death"][0]["reason"] == "rejected"
assert props.headers["x-death"][0]["queue"] == orders
assert props.headers["x-first-death-reason"] == ("rejected" if DELAYED else "expired")
if DELAYED:
    # As the plugin: the last hold's x-delay, negated.
    assert props.headers["x-delay"] == -4000, props.headers
    ch.exchange_delete(retry)
assert props.delivery_mode == 2
conn.close()
print("PASS")
