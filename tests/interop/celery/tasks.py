"""Celery app for the interop tests: broker from AMQP_URL, results over rpc://, queue name
from CELERY_QUEUE; CELERY_QUORUM=1 makes the queue a quorum queue with late acks;
CELERY_REMOTE_CONTROL=1 lets `celery inspect` reach the worker (its pidbox)."""
import os
from celery import Celery

app = Celery("tasks", broker=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
             backend="rpc://")
queue = os.environ.get("CELERY_QUEUE", "interop-celery")
app.conf.update(
    task_default_queue=queue,
    task_default_exchange=queue,
    task_default_routing_key=queue,
    # Off unless asked for: no pidbox exchanges left behind.
    worker_enable_remote_control=os.environ.get("CELERY_REMOTE_CONTROL") == "1",
    broker_connection_retry_on_startup=False,
)
if os.environ.get("CELERY_QUORUM") == "1":
    # A durable quorum queue, and tasks acked only once done, so that a
    # worker lost mid-task has its task redelivered (x-delivery-count).
    app.conf.update(task_default_queue_type="quorum", task_acks_late=True)


@app.task
def add(x, y):
    return x + y
