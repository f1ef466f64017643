// RabbitMQ tutorial 4 (routing) on amqplib: direct exchange, each queue gets exactly its severities.
'use strict';
const amqp = require('amqplib');
const assert = require('node:assert/strict');
const { randomBytes } = require('node:crypto');

const URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/';
setTimeout(() => { console.error('FAIL: timeout'); process.exit(1); }, 30000).unref();
const BINDINGS = { errors: ['error'], all: ['info', 'warning', 'error'], debug: ['debug'] };
const SENT = ['info', 'warning', 'error', 'critical', 'info', 'error', 'debug']; // "critical" is unroutable

// Consume from `queue` until the END marker; resolves with the bodies before it.
function untilEnd(ch, queue) {
  return new Promise((resolve, reject) => {
    const got = [];
    const consumer = ch.consume(queue, (msg) => {
      const body = msg.content.toString();
      if (body !== 'END') return got.push(body);
      consumer.then(({ consumerTag }) => ch.cancel(consumerTag)).then(() => resolve(got), reject);
    }, { noAck: true });
    consumer.catch(reject);
  });
}

async function main() {
  const exchange = `interop-direct-${randomBytes(4).toString('hex')}`;
  const conn = await amqp.connect(URL);
  try {
    const ch = await conn.createChannel();
    await ch.assertExchange(exchange, 'direct', { durable: false });
    const queues = {};
    for (const [name, severities] of Object.entries(BINDINGS)) {
      queues[name] = (await ch.assertQueue('', { exclusive: true })).queue;
      for (const severity of severities) await ch.bindQueue(queues[name], exchange, severity);
    }
    SENT.forEach((severity, i) => ch.publish(exchange, severity, Buffer.from(`${severity}:${i}`)));
    // end marker straight to each queue, after everything routed above
    for (const q of Object.values(queues)) ch.sendToQueue(q, Buffer.from('END'));
    for (const [name, q] of Object.entries(queues)) {
      const want = SENT.map((s, i) => `${s}:${i}`).filter((b) => BINDINGS[name].includes(b.split(':')[0]));
      assert.deepEqual(await untilEnd(ch, q), want, name);
    }
    await ch.deleteExchange(exchange);
  } finally {
    await conn.close();
  }
}

main().then(() => console.log('ok'), (err) => { console.error('FAIL:', err); process.exit(1); });
