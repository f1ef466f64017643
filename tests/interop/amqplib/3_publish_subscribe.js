// RabbitMQ tutorial 3 (publish/subscribe) on amqplib: fanout exchange, two exclusive server-named queues.
'use strict';
const amqp = require('amqplib');
const assert = require('node:assert/strict');
const { randomBytes } = require('node:crypto');

const URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/';
setTimeout(() => { console.error('FAIL: timeout'); process.exit(1); }, 30000).unref();
const N = 5;

// Consume `count` messages from `queue`, then cancel; resolves with their bodies.
function take(ch, queue, count) {
  return new Promise((resolve, reject) => {
    const got = [];
    const consumer = ch.consume(queue, (msg) => {
      got.push(msg.content.toString());
      if (got.length === count) consumer.then(({ consumerTag }) => ch.cancel(consumerTag)).then(() => resolve(got), reject);
    }, { noAck: true });
    consumer.catch(reject);
  });
}

async function main() {
  const exchange = `interop-logs-${randomBytes(4).toString('hex')}`;
  const conn = await amqp.connect(URL);
  try {
    const ch = await conn.createChannel();
    await ch.assertExchange(exchange, 'fanout', { durable: false });
    const queues = [];
    for (let i = 0; i < 2; i++) {
      const { queue } = await ch.assertQueue('', { exclusive: true });
      assert.ok(queue, 'server did not name the queue');
      await ch.bindQueue(queue, exchange, '');
      queues.push(queue);
    }
    assert.notEqual(queues[0], queues[1]);
    const sent = Array.from({ length: N }, (_, i) => `log ${i}`);
    for (const body of sent) ch.publish(exchange, '', Buffer.from(body));
    const results = await Promise.all(queues.map((q) => take(ch, q, N)));
    for (const got of results) assert.deepEqual(got, sent);
    await ch.deleteExchange(exchange);
  } finally {
    await conn.close(); // exclusive queues go with the connection
  }
}

main().then(() => console.log('ok'), (err) => { console.error('FAIL:', err); process.exit(1); });
