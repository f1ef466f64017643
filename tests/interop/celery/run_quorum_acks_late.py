"""Celery on a quorum queue with task_acks_late: a solo worker subprocess runs ten add()
tasks from a durable quorum queue (celery 5.7 then turns off global QoS, which quorum
queues do not support), acking each only once it is done; the results come back over
rpc://, and the queue is then empty."""
import os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ["CELERY_QUORUM"] = "1"
sys.exit(subprocess.call([sys.executable, os.path.join(HERE, "run_add.py")], env=os.environ))
