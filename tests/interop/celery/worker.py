"""A solo Celery worker subprocess for the interop scripts (the app from tasks.py,
whose queue is CELERY_QUEUE): started on entering, stopped on SIGTERM (warm
shutdown) on leaving, its queue and exchange dropped, its log printed if the
block failed or it did not stop. And the scripts' overall timeout."""
import contextlib, os, signal, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


class Overdue(BaseException):
    """The script's time is up. Not an OSError (Python's TimeoutError is one, and
    celery's and kombu's polling loops swallow socket timeouts), so nothing on
    the way catches it."""


def overall_timeout(seconds):
    """Raises Overdue in the main thread after `seconds`; the worker's cleanup
    (up to 20 s) must still fit in run.sh's 60 s per script."""
    def overdue(*_):
        raise Overdue(f"not done within {seconds} s")
    signal.signal(signal.SIGALRM, overdue)
    signal.alarm(seconds)


@contextlib.contextmanager
def worker(app, queue, *args):
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool=solo", "--concurrency=1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO", *args],
        cwd=HERE, stdout=log, stderr=subprocess.STDOUT)
    ok = False
    try:
        yield process
        ok = True
    finally:
        signal.alarm(0)  # the script's overall timeout must not cut the cleanup short
        process.terminate()  # warm shutdown (celery notices it within ~10 s)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            ok = False
            print("FAIL: worker did not stop on SIGTERM", file=sys.stderr)
        try:  # drop the per-run queue and exchange
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1)
                conn.default_channel.queue_delete(queue)
                conn.default_channel.exchange_delete(queue)
        except Exception as e:
            print(f"cleanup failed: {e!r}", file=sys.stderr)
        if not ok:
            log.seek(0)
            sys.stderr.write("--- worker log ---\n" + log.read())
    if not ok:
        sys.exit(1)
