"""Prometheus metrics, parsed by prometheus_client's own text parser: the
totals on /metrics and a queue's series on /metrics/per-object, in
rabbitmq_prometheus's names, follow what pika publishes and consumes;
so do the global message counters, and (Warren's own) the histograms of
fsync latency, group-commit size and delivery latency.
Needs PROMETHEUS_URL (run.sh sets it for the broker it starts)."""
import os
import sys
import urllib.request

import pika
from prometheus_client.parser import text_string_to_metric_families

url = os.environ.get("PROMETHEUS_URL")
if not url:
    print("skip: PROMETHEUS_URL unset")
    sys.exit(0)


def scrape(path):
    with urllib.request.urlopen(url + path, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain"), response.headers
        text = response.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def per_queue(families, name, queue):
    return [s.value for s in families[name].samples if s.labels.get("queue") == queue]


conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
ch = conn.channel()
queue = ch.queue_declare("", exclusive=True).method.queue
ch.confirm_delivery()
for i in range(5):
    ch.basic_publish("", queue, b"m%d" % i)

totals = scrape("/metrics")
for name in ["rabbitmq_connections", "rabbitmq_queues", "rabbitmq_queue_messages_ready",
             "rabbitmq_process_resident_memory_bytes", "rabbitmq_resident_memory_limit_bytes",
             "rabbitmq_disk_space_available_bytes", "rabbitmq_alarms_memory_used_watermark"]:
    assert name in totals, f"{name} missing"
    assert totals[name].type == "gauge", totals[name].type
assert totals["rabbitmq_connections"].samples[0].value >= 1
assert totals["rabbitmq_queue_messages_ready"].samples[0].value >= 5

objects = scrape("/metrics/per-object")
assert per_queue(objects, "rabbitmq_queue_messages_ready", queue) == [5.0]
# Two taken, not acked: unacked.
ch.basic_qos(prefetch_count=2)
taken = []
ch.basic_consume(queue, lambda c, m, p, b: taken.append(m.delivery_tag))
while len(taken) < 2:
    conn.process_data_events(time_limit=1)
objects = scrape("/metrics/per-object")
assert per_queue(objects, "rabbitmq_queue_messages_ready", queue) == [3.0]
assert per_queue(objects, "rabbitmq_queue_messages_unacked", queue) == [2.0]
assert per_queue(objects, "rabbitmq_queue_consumers", queue) == [1.0]

# Persistent messages on a durable queue: a group commit, with its fsync.
durable = "prometheus-scrape-durable"
ch.queue_declare(durable, durable=True)
for i in range(3):
    ch.basic_publish("", durable, b"d", pika.BasicProperties(delivery_mode=2))
ch.queue_delete(durable)
totals = scrape("/metrics")
received = totals["rabbitmq_global_messages_received"]
assert received.type == "counter", received.type
assert received.samples[0].name == "rabbitmq_global_messages_received_total"
assert received.samples[0].value >= 8, received.samples
for name in ["rabbitmq_global_messages_confirmed", "rabbitmq_global_messages_delivered",
             "rabbitmq_global_messages_acknowledged"]:
    assert totals[name].type == "counter", name
if "warren_build_info" in totals:
    for name, least in [("warren_store_fsync_seconds", 1), ("warren_store_group_commit_messages", 1),
                        ("warren_message_delivery_latency_seconds", 2)]:
        family = totals[name]
        assert family.type == "histogram", (name, family.type)
        count = [s.value for s in family.samples if s.name == name + "_count"]
        assert count and count[0] >= least, (name, count)
        infinite = [s.value for s in family.samples if s.labels.get("le") == "+Inf"]
        assert infinite == count, (name, infinite, count)
conn.close()
print("ok")
