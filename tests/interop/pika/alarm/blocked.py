"""pika on a broker whose memory alarm is on (run.sh starts one with
--memory-high-watermark 1B): the publisher hears connection.blocked with
RabbitMQ's reason at its first publish, its message is held (not in the
queue), and other connections keep working."""
import os
import time

import pika

url = os.environ["ALARM_URL"]
reasons = []
publisher = pika.BlockingConnection(pika.URLParameters(url))
publisher.add_on_connection_blocked_callback(lambda conn, frame: reasons.append(frame.method.reason))
other = pika.BlockingConnection(pika.URLParameters(url))
och = other.channel()
och.queue_declare("alarm-pika", auto_delete=False)
och.queue_purge("alarm-pika")

publisher.channel().basic_publish("", "alarm-pika", b"held")
deadline = time.monotonic() + 10
while not reasons and time.monotonic() < deadline:
    publisher.process_data_events(time_limit=0.1)
assert reasons == ["low on memory"], reasons

method, _, _ = och.basic_get("alarm-pika", auto_ack=True)
assert method is None, "the held message reached the queue"
och.queue_delete("alarm-pika")
other.close()
print("blocked:", reasons[0])
