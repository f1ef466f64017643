"""Celery over AMQP: start a solo worker subprocess, send ten add() tasks, check the ten rpc:// results."""
import os, sys, uuid

HERE = os.path.dirname(os.path.abspath(__file__))
QUEUE = os.environ["CELERY_QUEUE"] = f"interop-celery-{uuid.uuid4().hex[:8]}"
sys.path.insert(0, HERE)
from tasks import add, app  # noqa: E402  (reads CELERY_QUEUE)
from worker import overall_timeout, worker  # noqa: E402


overall_timeout(30)
with worker(app, QUEUE):
    results = [add.delay(i, i * 10) for i in range(10)]
    values = [r.get(timeout=20) for r in results]
    assert values == [i * 11 for i in range(10)], values
    assert all(r.successful() for r in results)
    if os.environ.get("CELERY_QUORUM") == "1":
        # The queue celery declared is a quorum queue: redeclaring it as a
        # classic one is refused as inequivalent.
        import amqp
        with app.connection_for_write() as conn:
            try:
                conn.default_channel.queue_declare(QUEUE, durable=True, auto_delete=False,
                                                    arguments={"x-queue-type": "classic"})
                raise AssertionError("the task queue is not a quorum queue")
            except amqp.exceptions.PreconditionFailed as e:
                assert "x-queue-type" in str(e), e
print("ok", values)
