// RabbitMQ tutorial 5 (topics) on amqplib: topic exchange with * and # bindings, exact set per queue.
'use strict';
const amqp = require('amqplib');
const assert = require('node:assert/strict');
const { randomBytes } = require('node:crypto');

const URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/';
setTimeout(() => { console.error('FAIL: timeout'); process.exit(1); }, 30000).unref();
const BINDINGS = { Q1: ['*.orange.*'], Q2: ['*.*.rabbit', 'lazy.#'], all: ['#'] };
const KEYS = ['quick.orange.rabbit', 'lazy.orange.elephant', 'quick.orange.fox', 'lazy.brown.fox',
  'lazy.pink.rabbit', 'quick.brown.fox', 'orange', 'quick.orange.male.rabbit',
  'lazy.orange.male.rabbit', 'lazy', ''];
const EXPECTED = {
  Q1: ['quick.orange.rabbit', 'lazy.orange.elephant', 'quick.orange.fox'],
  Q2: ['quick.orange.rabbit', 'lazy.orange.elephant', 'lazy.brown.fox', 'lazy.pink.rabbit',
    'lazy.orange.male.rabbit', 'lazy'],
  all: KEYS,
};
const END = '\u0000END';

// Consume from `queue` until the END marker; resolves with the bodies before it.
function untilEnd(ch, queue) {
  return new Promise((resolve, reject) => {
    const got = [];
    const consumer = ch.consume(queue, (msg) => {
      const body = msg.content.toString();
      if (body !== END) return got.push(body);
      consumer.then(({ consumerTag }) => ch.cancel(consumerTag)).then(() => resolve(got), reject);
    }, { noAck: true });
    consumer.catch(reject);
  });
}

async function main() {
  const exchange = `interop-topic-${randomBytes(4).toString('hex')}`;
  const conn = await amqp.connect(URL);
  try {
    const ch = await conn.createChannel();
    await ch.assertExchange(exchange, 'topic', { durable: false });
    const queues = {};
    for (const [name, patterns] of Object.entries(BINDINGS)) {
      queues[name] = (await ch.assertQueue('', { exclusive: true })).queue;
      for (const pattern of patterns) await ch.bindQueue(queues[name], exchange, pattern);
    }
    for (const key of KEYS) ch.publish(exchange, key, Buffer.from(key));
    // end marker straight to each queue, after everything routed above
    for (const q of Object.values(queues)) ch.sendToQueue(q, Buffer.from(END));
    for (const [name, q] of Object.entries(queues)) {
      // a message matching several bindings of one queue is delivered to it once
      assert.deepEqual((await untilEnd(ch, q)).sort(), [...EXPECTED[name]].sort(), name);
    }
    await ch.deleteExchange(exchange);
  } finally {
    await conn.close();
  }
}

main().then(() => console.log('ok'), (err) => { console.error('FAIL:', err); process.exit(1); });
