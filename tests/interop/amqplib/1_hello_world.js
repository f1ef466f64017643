// RabbitMQ tutorial 1 (hello world) on amqplib: publish one message to a queue and consume it.
'use strict';
const amqp = require('amqplib');
const assert = require('node:assert/strict');
const { randomBytes } = require('node:crypto');

const URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/';
setTimeout(() => { console.error('FAIL: timeout'); process.exit(1); }, 30000).unref();

async function main() {
  const queue = `interop-hello-${randomBytes(4).toString('hex')}`;
  const conn = await amqp.connect(URL);
  try {
    const ch = await conn.createChannel();
    await ch.assertQueue(queue);
    ch.sendToQueue(queue, Buffer.from('Hello World!'));
    let onMessage;
    const received = new Promise((resolve) => { onMessage = resolve; });
    const { consumerTag } = await ch.consume(queue, onMessage, { noAck: true });
    assert.equal((await received).content.toString(), 'Hello World!');
    await ch.cancel(consumerTag);
    assert.equal((await ch.checkQueue(queue)).messageCount, 0);
    await ch.deleteQueue(queue);
  } finally {
    await conn.close();
  }
}

main().then(() => console.log('ok'), (err) => { console.error('FAIL:', err); process.exit(1); });
