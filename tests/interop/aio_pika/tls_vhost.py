"""aio-pika over TLS (amqps) as a user of a vhost of its own: publish with
confirms, consume, ack. Warren only: see pika/tls_vhost.py."""
import asyncio
import os
import ssl
import sys

import aio_pika


async def main():
    url = os.environ.get("TLS_URL")
    if not url:
        print("skip: no TLS listener (TLS_URL unset)")
        return
    context = ssl.create_default_context(cafile=os.environ["TLS_CA"])
    connection = await aio_pika.connect(url, ssl_context=context, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(exclusive=True)
        for i in range(100):
            await channel.default_exchange.publish(aio_pika.Message(str(i).encode()), routing_key=queue.name)
        got = []
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    got.append(int(message.body))
                if len(got) == 100:
                    break
        assert got == list(range(100)), got
    print("ok")


asyncio.run(asyncio.wait_for(main(), 30))
sys.exit(0)
