"""Celery's remote control and Flower's broker view: `celery inspect` (ping,
active_queues, registered, stats) reaches a running worker through the
broker's pidbox exchanges and reply queues; Flower's RabbitMQ broker class
reads a queue's counts from the management API (MANAGEMENT_URL; skipped
without it). Flower asks for `/api/queues/<vhost>` of the broker URL's vhost,
and the default vhost gives it `queues//`, which RabbitMQ answers 404 (so
does Warren), so it runs in a vhost of its own, made through the API."""
import asyncio, os, sys, time, urllib.parse, uuid

HERE = os.path.dirname(os.path.abspath(__file__))
QUEUE = os.environ["CELERY_QUEUE"] = f"interop-inspect-{uuid.uuid4().hex[:8]}"
os.environ["CELERY_REMOTE_CONTROL"] = "1"
sys.path.insert(0, HERE)
from tasks import add, app  # noqa: E402  (reads CELERY_QUEUE)
from worker import overall_timeout, worker  # noqa: E402

sys.path.insert(0, os.path.dirname(HERE))
import management_api  # noqa: E402
from management_api import call  # noqa: E402


overall_timeout(30)
name = f"inspect-{uuid.uuid4().hex[:6]}@interop"
with worker(app, QUEUE, "-n", name):
    # The worker answers once it has started consuming its pidbox.
    inspect = app.control.inspect(timeout=1.0, destination=[name])
    while not (inspect.ping() or {}).get(name):
        time.sleep(0.2)
    assert inspect.ping() == {name: {"ok": "pong"}}, inspect.ping()
    queues = inspect.active_queues()[name]
    assert [q["name"] for q in queues] == [QUEUE], queues
    assert "tasks.add" in inspect.registered()[name], inspect.registered()
    stats = inspect.stats()[name]
    assert stats["broker"]["transport"] == "amqp", stats["broker"]
    assert stats["pool"]["max-concurrency"] == 1, stats["pool"]
    assert add.delay(2, 3).get(timeout=20) == 5

if not management_api.URL:
    print("ok: inspect; Flower skipped (MANAGEMENT_URL unset)")
    sys.exit(0)
from flower.utils.broker import RabbitMQ  # noqa: E402

vhost = f"flower-{uuid.uuid4().hex[:6]}"
call("PUT", f"/api/vhosts/{vhost}")
try:
    call("PUT", f"/api/queues/{vhost}/flower-q", {"durable": False})
    for i in range(3):
        call("POST", f"/api/exchanges/{vhost}/amq.default/publish",
             {"routing_key": "flower-q", "payload": str(i), "payload_encoding": "string", "properties": {}})
    amqp = urllib.parse.urlparse(os.environ["AMQP_URL"])
    api = urllib.parse.urlparse(management_api.URL)
    broker = RabbitMQ(f"amqp://guest:guest@{amqp.hostname}:{amqp.port}/{vhost}",
                      http_api=f"http://guest:guest@{api.hostname}:{api.port}/api/")
    # RabbitMQ's counts lag by its statistics interval.
    deadline = time.monotonic() + 15
    while True:
        seen = asyncio.run(broker.queues(["flower-q"]))
        if seen and seen[0].get("messages") == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(seen) == 1, seen
    q = seen[0]
    assert (q["name"], q["messages"], q["messages_ready"], q["messages_unacknowledged"], q["consumers"]) == \
        ("flower-q", 3, 3, 0, 0), q
finally:
    call("DELETE", f"/api/vhosts/{vhost}")
print("ok: inspect and Flower's broker view")
