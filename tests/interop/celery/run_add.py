"""Celery over AMQP: start a solo worker subprocess, send ten add() tasks, check the ten rpc:// results."""
import os, signal, subprocess, sys, tempfile, uuid

HERE = os.path.dirname(os.path.abspath(__file__))
QUEUE = os.environ["CELERY_QUEUE"] = f"interop-celery-{uuid.uuid4().hex[:8]}"
sys.path.insert(0, HERE)
from tasks import add, app  # noqa: E402  (reads CELERY_QUEUE)


def on_timeout(*_):
    raise TimeoutError("overall timeout")  # raised in the main thread, so `finally` still stops the worker


signal.signal(signal.SIGALRM, on_timeout)
signal.alarm(30)
log = tempfile.TemporaryFile(mode="w+")
worker = subprocess.Popen(
    [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool=solo", "--concurrency=1",
     "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO"],
    cwd=HERE, stdout=log, stderr=subprocess.STDOUT)
ok = False
try:
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
    ok = True
finally:
    signal.alarm(0)
    worker.terminate()  # warm shutdown (celery notices it within ~10 s)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        ok = False
        print("FAIL: worker did not stop on SIGTERM", file=sys.stderr)
    try:  # drop the per-run queue and exchange
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            conn.default_channel.queue_delete(QUEUE)
            conn.default_channel.exchange_delete(QUEUE)
    except Exception as e:
        print(f"cleanup failed: {e!r}", file=sys.stderr)
    if not ok:
        log.seek(0)
        sys.stderr.write("--- worker log ---\n" + log.read())
if not ok:
    sys.exit(1)
print("ok", values)
