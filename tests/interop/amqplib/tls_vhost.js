// amqplib over TLS (amqps) as a user of a vhost of its own, with a
// password, then with EXTERNAL and a client certificate. Warren only: see
// pika/tls_vhost.py.
const amqp = require('amqplib');
const fs = require('fs');
const assert = require('assert');

async function roundTrip(conn, text) {
  const ch = await conn.createConfirmChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  await new Promise((resolve, reject) =>
    ch.sendToQueue(queue, Buffer.from(text), {}, (err) => (err ? reject(err) : resolve())));
  const msg = await ch.get(queue, { noAck: true });
  assert.strictEqual(msg.content.toString(), text);
  await conn.close();
}

(async () => {
  const url = process.env.TLS_URL;
  if (!url) {
    console.log('skip: no TLS listener (TLS_URL unset)');
    return;
  }
  const ca = [fs.readFileSync(process.env.TLS_CA)];
  await roundTrip(await amqp.connect(url, { ca, servername: 'localhost' }), 'with a password');
  const parsed = new URL(url);
  const external = `amqps://localhost:${parsed.port}${parsed.pathname}`;
  const conn = await amqp.connect(external, {
    ca,
    servername: 'localhost',
    cert: fs.readFileSync(process.env.TLS_CLIENT_CERT),
    key: fs.readFileSync(process.env.TLS_CLIENT_KEY),
    credentials: amqp.credentials.external(),
  });
  await roundTrip(conn, 'by certificate');
  console.log('ok');
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
