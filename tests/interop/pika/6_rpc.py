"""RabbitMQ tutorial 6 (RPC) on pika: fib server in a thread (own connection), client with reply_to + correlation_id."""
import os, signal, sys, threading, uuid
import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: timeout", file=sys.stderr, flush=True), os._exit(1)))
signal.alarm(30)


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


rpc_queue = f"interop-rpc-{uuid.uuid4().hex[:8]}"
server_conn = pika.BlockingConnection(pika.URLParameters(URL))
server = server_conn.channel()
server.queue_declare(queue=rpc_queue, exclusive=True)
server.basic_qos(prefetch_count=1)


def on_request(ch, method, props, body):
    reply = str(fib(int(body))).encode()
    ch.basic_publish(exchange="", routing_key=props.reply_to, body=reply,
                     properties=pika.BasicProperties(correlation_id=props.correlation_id))
    ch.basic_ack(method.delivery_tag)


server.basic_consume(queue=rpc_queue, on_message_callback=on_request)
thread = threading.Thread(target=server.start_consuming, daemon=True)
thread.start()

conn = pika.BlockingConnection(pika.URLParameters(URL))
ch = conn.channel()
callback_queue = ch.queue_declare(queue="", exclusive=True).method.queue
responses = {}


def on_response(_ch, _method, props, body):
    responses[props.correlation_id] = int(body)


ch.basic_consume(queue=callback_queue, on_message_callback=on_response, auto_ack=True)
try:
    calls = {}
    for n in [0, 1, 2, 10, 30, 90]:
        corr_id = str(uuid.uuid4())
        calls[corr_id] = n
        ch.basic_publish(exchange="", routing_key=rpc_queue, body=str(n).encode(),
                         properties=pika.BasicProperties(reply_to=callback_queue, correlation_id=corr_id))
    while len(responses) < len(calls):
        conn.process_data_events(time_limit=1)
    assert set(responses) == set(calls), (responses, calls)
    for corr_id, n in calls.items():
        assert responses[corr_id] == fib(n), (n, responses[corr_id])
    assert responses[next(c for c, n in calls.items() if n == 10)] == 55
finally:
    server_conn.add_callback_threadsafe(server.stop_consuming)
    thread.join()
    server_conn.close()
    conn.close()
print("ok")
