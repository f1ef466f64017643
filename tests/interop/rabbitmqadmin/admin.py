"""rabbitmqadmin, the management plugin's own CLI, against the broker's
management API: declare a queue, an exchange and a binding, publish, list,
get, purge, and delete. rabbitmqadmin is not in this repository: it is taken
from a RabbitMQ install (RABBITMQADMIN, or `rabbitmqadmin` on the PATH), or
else from Debian's rabbitmq-server package, downloaded at test time.
Needs MANAGEMENT_URL (run.sh sets it for the broker it starts)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlparse

url = os.environ.get("MANAGEMENT_URL")
if not url:
    print("skip: MANAGEMENT_URL unset")
    sys.exit(0)


def find_rabbitmqadmin():
    found = os.environ.get("RABBITMQADMIN") or shutil.which("rabbitmqadmin")
    if found:
        return found
    cache = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".venv", "rabbitmqadmin")
    if os.path.exists(cache):
        return cache
    with tempfile.TemporaryDirectory() as tmp:
        download = ["apt-get", "download", "rabbitmq-server"]
        if subprocess.run(download, cwd=tmp, capture_output=True).returncode != 0:
            # A fresh machine may have no package lists yet.
            subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
            subprocess.run(download, cwd=tmp, check=True, capture_output=True)
        deb = next(f for f in os.listdir(tmp) if f.endswith(".deb"))
        subprocess.run(["dpkg-deb", "-x", deb, "root"], cwd=tmp, check=True)
        for base, _, files in os.walk(os.path.join(tmp, "root")):
            if "rabbitmqadmin" in files:
                shutil.copy(os.path.join(base, "rabbitmqadmin"), cache)
                return cache
    raise SystemExit("rabbitmqadmin not found in the rabbitmq-server package")


admin = find_rabbitmqadmin()
parsed = urlparse(url)
base = [sys.executable, admin, "-H", parsed.hostname, "-P", str(parsed.port), "-u", "guest", "-p", "guest"]


def run(*args, json_out=False):
    extra = ["-f", "raw_json"] if json_out else []
    out = subprocess.run(base + extra + list(args), capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise SystemExit(f"rabbitmqadmin {' '.join(args)} failed: {out.stdout}{out.stderr}")
    return json.loads(out.stdout) if json_out else out.stdout


suffix = str(os.getpid())
queue, exchange = f"adm-q-{suffix}", f"adm-x-{suffix}"
run("declare", "queue", f"name={queue}", "durable=false")
run("declare", "exchange", f"name={exchange}", "type=topic", "durable=false")
run("declare", "binding", f"source={exchange}", f"destination={queue}", "routing_key=orders.#")
assert "Message published" in run("publish", f"exchange={exchange}", "routing_key=orders.new", "payload=hello")
assert "NOT routed" in run("publish", f"exchange={exchange}", "routing_key=other", "payload=lost")
assert any(q["name"] == queue for q in run("list", "queues", json_out=True))
assert any(x["name"] == exchange and x["type"] == "topic" for x in run("list", "exchanges", json_out=True))
bindings = run("list", "bindings", json_out=True)
assert any(b["source"] == exchange and b["destination"] == queue and b["routing_key"] == "orders.#" for b in bindings)
# Look without taking, then take.
got = run("get", f"queue={queue}", "ackmode=ack_requeue_true", json_out=True)
assert [m["payload"] for m in got] == ["hello"], got
got = run("get", f"queue={queue}", "ackmode=ack_requeue_false", json_out=True)
assert [(m["payload"], m["redelivered"]) for m in got] == [("hello", True)], got
run("publish", f"exchange={exchange}", "routing_key=orders.two", "payload=two")
run("purge", "queue", f"name={queue}")
assert run("get", f"queue={queue}", "ackmode=ack_requeue_false", json_out=True) == []
run("delete", "binding", f"source={exchange}", "destination_type=queue", f"destination={queue}",
    "properties_key=orders.#")
run("delete", "queue", f"name={queue}")
run("delete", "exchange", f"name={exchange}")
assert all(q["name"] != queue for q in run("list", "queues", json_out=True))
assert any(v["name"] == "/" for v in run("list", "vhosts", json_out=True))
print("ok")
