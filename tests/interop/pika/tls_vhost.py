"""pika over TLS (amqps) as a user of a vhost of its own, with a password,
then with EXTERNAL and a client certificate whose common name is the user.
Warren only: run.sh sets TLS_URL, TLS_CA, TLS_CLIENT_CERT, TLS_CLIENT_KEY
for the broker it starts; without them there is nothing to test."""
import os
import ssl
import sys
from urllib.parse import urlparse, unquote

import pika

url = os.environ.get("TLS_URL")
if not url:
    print("skip: no TLS listener (TLS_URL unset)")
    sys.exit(0)
parsed = urlparse(url)
user, vhost = parsed.username, unquote(parsed.path[1:])

context = ssl.create_default_context(cafile=os.environ["TLS_CA"])
params = pika.URLParameters(url)
params.ssl_options = pika.SSLOptions(context, "localhost")
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.confirm_delivery()
q = ch.queue_declare("", exclusive=True).method.queue
body = os.urandom(300_000)
ch.basic_publish("", q, body, pika.BasicProperties(user_id=user))
method, props, got = ch.basic_get(q, auto_ack=True)
assert got == body, "the body came back whole"
assert props.user_id == user, props.user_id
conn.close()

# EXTERNAL: the certificate is the credential.
context.load_cert_chain(os.environ["TLS_CLIENT_CERT"], os.environ["TLS_CLIENT_KEY"])
params = pika.ConnectionParameters(
    host="localhost",
    port=parsed.port,
    virtual_host=vhost,
    ssl_options=pika.SSLOptions(context, "localhost"),
    credentials=pika.credentials.ExternalCredentials(),
)
conn = pika.BlockingConnection(params)
ch = conn.channel()
q = ch.queue_declare("", exclusive=True).method.queue
ch.basic_publish("", q, b"by certificate")
assert ch.basic_get(q, auto_ack=True)[2] == b"by certificate"
conn.close()
print("ok")
