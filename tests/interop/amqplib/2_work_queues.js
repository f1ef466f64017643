// RabbitMQ tutorial 2 (work queues) on amqplib: two competing consumers, manual ack, prefetch 1.
// Fair dispatch check: whichever worker gets a task first keeps it unacked ("busy"); with
// prefetch 1 the broker must then hand every other task to the second worker.
'use strict';
const amqp = require('amqplib');
const assert = require('node:assert/strict');
const { randomBytes } = require('node:crypto');

const URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/';
setTimeout(() => { console.error('FAIL: timeout'); process.exit(1); }, 30000).unref();
const N = 10;

async function main() {
  const queue = `interop-task-${randomBytes(4).toString('hex')}`;
  const conn = await amqp.connect(URL);
  const workerConns = [];
  const workerChans = [];
  try {
    const producer = await conn.createChannel();
    await producer.assertQueue(queue, { durable: true });
    const got = { A: [], B: [] };
    let held = null;
    let acked = 0;
    let allButOneAcked;
    const done = new Promise((resolve) => { allButOneAcked = resolve; });
    for (const name of ['A', 'B']) {
      const wc = await amqp.connect(URL); // each worker on its own connection
      workerConns.push(wc);
      const ch = await wc.createChannel();
      workerChans.push(ch);
      await ch.prefetch(1);
      await ch.consume(queue, (msg) => {
        got[name].push(msg.content.toString());
        if (held === null) {
          held = { name, ch, msg }; // busy: don't ack yet
        } else {
          ch.ack(msg);
          if (++acked === N - 1) allButOneAcked();
        }
      });
    }
    for (let i = 0; i < N; i++) producer.sendToQueue(queue, Buffer.from(`task ${i}`), { persistent: true });
    await done;
    held.ch.ack(held.msg);
    const idle = held.name === 'A' ? 'B' : 'A';
    assert.equal(got[held.name].length, 1, JSON.stringify(got));
    assert.equal(got[idle].length, N - 1, JSON.stringify(got));
    assert.deepEqual([...got.A, ...got.B].sort(), Array.from({ length: N }, (_, i) => `task ${i}`).sort());
    // closing a channel flushes its acks first and would requeue anything still unacked
    for (const ch of workerChans) await ch.close();
    assert.equal((await producer.checkQueue(queue)).messageCount, 0);
    await producer.deleteQueue(queue);
    console.log('ok', { A: got.A.length, B: got.B.length });
  } finally {
    for (const wc of workerConns) await wc.close();
    await conn.close();
  }
}

main().catch((err) => { console.error('FAIL:', err); process.exit(1); });
