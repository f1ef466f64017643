// connection.update-secret on amqplib (the OAuth token refresh path): the broker answers
// update-secret-ok and the connection goes on serving, as RabbitMQ does for its internal
// users (probed on 3.10.8).
'use strict';
const amqp = require('amqplib');
const assert = require('node:assert/strict');
const { randomBytes } = require('node:crypto');

const URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/';
setTimeout(() => { console.error('FAIL: timeout'); process.exit(1); }, 30000).unref();

async function main() {
  const queue = `interop-update-secret-${randomBytes(4).toString('hex')}`;
  const conn = await amqp.connect(URL);
  try {
    const ch = await conn.createChannel();
    await ch.assertQueue(queue, { exclusive: true });
    for (let n = 0; n < 3; n++) {
      await conn.updateSecret(Buffer.from(`refreshed-token-${n}`), 'token refresh');
      ch.sendToQueue(queue, Buffer.from(`after refresh ${n}`));
      let got = false;
      while (!got) {
        got = await ch.get(queue, { noAck: true });
      }
      assert.equal(got.content.toString(), `after refresh ${n}`);
    }
  } finally {
    await conn.close();
  }
  console.log('PASS');
}

main().catch((e) => { console.error('FAIL:', e); process.exit(1); });
