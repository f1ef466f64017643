// RabbitMQ tutorial 6 (RPC) on amqplib: fib server and client on separate connections, reply_to + correlation_id.
'use strict';
const amqp = require('amqplib');
const assert = require('node:assert/strict');
const { randomBytes, randomUUID } = require('node:crypto');

const URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/';
setTimeout(() => { console.error('FAIL: timeout'); process.exit(1); }, 30000).unref();

function fib(n) {
  let [a, b] = [0n, 1n];
  for (let i = 0; i < n; i++) [a, b] = [b, a + b];
  return a;
}

async function startServer(conn, queue) {
  const ch = await conn.createChannel();
  await ch.assertQueue(queue, { exclusive: true });
  await ch.prefetch(1);
  await ch.consume(queue, (msg) => {
    const n = Number(msg.content.toString());
    ch.sendToQueue(msg.properties.replyTo, Buffer.from(fib(n).toString()),
      { correlationId: msg.properties.correlationId });
    ch.ack(msg);
  });
}

async function main() {
  const rpcQueue = `interop-rpc-${randomBytes(4).toString('hex')}`;
  const serverConn = await amqp.connect(URL);
  const clientConn = await amqp.connect(URL);
  try {
    await startServer(serverConn, rpcQueue);
    const ch = await clientConn.createChannel();
    const { queue: callbackQueue } = await ch.assertQueue('', { exclusive: true });
    const pending = new Map(); // correlationId -> resolve
    await ch.consume(callbackQueue, (msg) => {
      const resolve = pending.get(msg.properties.correlationId);
      assert.ok(resolve, `unexpected correlationId ${msg.properties.correlationId}`);
      pending.delete(msg.properties.correlationId);
      resolve(BigInt(msg.content.toString()));
    }, { noAck: true });
    const call = (n) => new Promise((resolve) => {
      const correlationId = randomUUID();
      pending.set(correlationId, resolve);
      ch.sendToQueue(rpcQueue, Buffer.from(String(n)), { correlationId, replyTo: callbackQueue });
    });
    const ns = [0, 1, 2, 10, 30, 90];
    const results = await Promise.all(ns.map(call));
    ns.forEach((n, i) => assert.equal(results[i], fib(n), `fib(${n})`));
    assert.equal(results[3], 55n);
    assert.equal(pending.size, 0);
  } finally {
    await clientConn.close();
    await serverConn.close();
  }
}

main().then(() => console.log('ok'), (err) => { console.error('FAIL:', err); process.exit(1); });
