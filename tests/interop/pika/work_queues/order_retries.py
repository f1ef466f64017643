"""Order processing with retries and backoff, on pika, in the pattern
RabbitMQ users build from TTL and dead-lettering: a failed order is parked
in a wait queue whose x-message-ttl is the backoff (1 s, 2 s, 4 s); when
it expires there, it is dead-lettered back to the order queue, and the
x-death counts tell the worker how many tries it has had. After three
retries the worker rejects it, and the order queue dead-letters it to a
failed-orders queue. Checks: the backoff between tries, the x-death
counting, and what reaches the failed-orders queue (reason 'rejected')."""
import os, signal, sys, time, uuid
import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: timeout", file=sys.stderr, flush=True), os._exit(1)))
signal.alarm(45)

tag = uuid.uuid4().hex[:8]
orders, failed = f"interop-orders-{tag}", f"interop-orders-failed-{tag}"
waits = {delay: f"interop-orders-wait-{delay}s-{tag}" for delay in (1, 2, 4)}
conn = pika.BlockingConnection(pika.URLParameters(URL))
ch = conn.channel()
ch.queue_declare(failed, exclusive=True)
ch.queue_declare(orders, exclusive=True, arguments={
    "x-dead-letter-exchange": "", "x-dead-letter-routing-key": failed})
for delay, name in waits.items():
    ch.queue_declare(name, exclusive=True, arguments={
        "x-message-ttl": delay * 1000,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": orders})

def tries(props):
    """Retries so far: how often the message expired in a wait queue."""
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
        # Park it for 1, 2 then 4 s, then let the broker bring it back.
        delay = 2 ** n
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
assert props.headers["x-first-death-reason"] == "expired"
assert props.delivery_mode == 2
conn.close()
print("PASS")
