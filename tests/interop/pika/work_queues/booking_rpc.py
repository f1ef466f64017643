"""A ticket-booking RPC on pika over direct reply-to: the client consumes
amq.rabbitmq.reply-to (no queue of its own), sends each request with
reply_to set to it and a per-message expiration as its timeout, and waits
for the reply with the same correlation id. A booking server answers from
a worker queue; a request nobody picks up in time expires instead of
being served late. Checks: replies reach the right caller, the rewritten
reply address, and that an expired request is never served."""
import os, signal, sys, threading, time, uuid
import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: timeout", file=sys.stderr, flush=True), os._exit(1)))
signal.alarm(30)

requests_q = f"interop-booking-{uuid.uuid4().hex[:8]}"
setup = pika.BlockingConnection(pika.URLParameters(URL))
setup.channel().queue_declare(requests_q, auto_delete=False)

client = pika.BlockingConnection(pika.URLParameters(URL))
cch = client.channel()
replies = {}
cch.basic_consume("amq.rabbitmq.reply-to",
                  lambda _c, _m, props, body: replies.__setitem__(props.correlation_id, body.decode()),
                  auto_ack=True)

def call(seat, timeout_ms):
    corr = str(uuid.uuid4())
    cch.basic_publish("", requests_q, seat.encode(), pika.BasicProperties(
        reply_to="amq.rabbitmq.reply-to", correlation_id=corr, expiration=str(timeout_ms)))
    return corr

# A request sent while no server runs, with a 100 ms timeout: it must
# expire, not be booked when the server starts.
stale = call("seat-13", 100)
time.sleep(0.3)

served = []
def serve():
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)
    def on_request(ch, method, props, body):
        seat = body.decode()
        served.append(seat)
        assert props.reply_to.startswith("amq.rabbitmq.reply-to."), props.reply_to
        ch.basic_publish("", props.reply_to, f"booked {seat}".encode(),
                         pika.BasicProperties(correlation_id=props.correlation_id))
        ch.basic_ack(method.delivery_tag)
    ch.basic_consume(requests_q, on_request)
    ch.start_consuming()
threading.Thread(target=serve, daemon=True).start()

calls = {call(f"seat-{n}", 10_000): f"seat-{n}" for n in range(5)}
deadline = time.time() + 10
while len(replies) < len(calls) and time.time() < deadline:
    client.process_data_events(time_limit=0.1)
for corr, seat in calls.items():
    assert replies.get(corr) == f"booked {seat}", (seat, replies.get(corr))
assert stale not in replies and "seat-13" not in served, "an expired request was served"
setup.channel().queue_delete(requests_q)
print("PASS")
