"""An email queue, as a mail service runs one on pika: password resets
(priority 9) jump ahead of newsletters (priority 1) in a priority queue
(x-max-priority 10), and the queue holds at most 20 mails (x-max-length)
so that a stuck sender cannot pile up newsletters. When it is full, new
mails are refused (x-overflow reject-publish-dlx): the sender gets a nack,
and the mail lands in a dead-letter queue with x-death reason 'maxlen' for
a later retry. (With the default drop-head, a priority queue drops its
head, which is its highest priority: RabbitMQ would drop the resets.)
Checks: the nacks, the length limit, order by priority then FIFO, and
what the dead-letter queue got."""
import os, signal, sys, uuid
import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: timeout", file=sys.stderr, flush=True), os._exit(1)))
signal.alarm(30)

tag = uuid.uuid4().hex[:8]
mail_q, overflow_q = f"interop-mail-{tag}", f"interop-mail-overflow-{tag}"
conn = pika.BlockingConnection(pika.URLParameters(URL))
ch = conn.channel()
ch.queue_declare(overflow_q, exclusive=True)
ch.queue_declare(mail_q, exclusive=True, arguments={
    "x-max-priority": 10,
    "x-max-length": 20,
    "x-overflow": "reject-publish-dlx",
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": overflow_q,
})
ch.confirm_delivery()

def send(kind, n, priority):
    """True if the broker took it (acked), False if it refused it (nacked)."""
    try:
        ch.basic_publish("", mail_q, f"{kind}-{n}".encode(),
                         pika.BasicProperties(priority=priority, delivery_mode=2, content_type="text/plain"))
        return True
    except pika.exceptions.NackError:
        return False

taken = [send("newsletter", n, 1) for n in range(25)]
assert taken == [True] * 20 + [False] * 5, f"acks {taken}"
assert ch.queue_declare(mail_q, passive=True).method.message_count == 20

# A worker sends three newsletters, which makes room for three resets.
for n in range(3):
    method, _props, body = ch.basic_get(mail_q)
    assert body.decode() == f"newsletter-{n}", body
    ch.basic_ack(method.delivery_tag)
assert all(send("reset", n, 9) for n in range(3))

sent = []
while True:
    method, props, body = ch.basic_get(mail_q, auto_ack=False)
    if method is None:
        break
    sent.append(body.decode())
    ch.basic_ack(method.delivery_tag)
expected = [f"reset-{n}" for n in range(3)] + [f"newsletter-{n}" for n in range(3, 20)]
assert sent == expected, f"delivery order {sent}"

overflow = []
while True:
    method, props, body = ch.basic_get(overflow_q, auto_ack=True)
    if method is None:
        break
    death = props.headers["x-death"][0]
    assert death["reason"] == "maxlen" and death["queue"] == mail_q, death
    assert props.headers["x-first-death-reason"] == "maxlen"
    assert props.content_type == "text/plain" and props.delivery_mode == 2
    overflow.append(body.decode())
assert overflow == [f"newsletter-{n}" for n in range(20, 25)], f"dead-lettered {overflow}"
conn.close()
print("PASS")
