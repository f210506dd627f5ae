// Sends events with the riemann npm client, an independent implementation of
// Riemann's protocol, and prints one line of JSON per reply.
//
//   node send.js HOST PORT tcp|udp < events.json
//
// stdin holds a JSON array of events, as the client's Event() takes them.
// Over tcp each send waits for the server's ack, which is printed; over udp
// each send waits until the datagram is sent, and null is printed.
'use strict';

const fs = require('fs');
const riemann = require('riemann');

async function main() {
  const [host, port, transport] = process.argv.slice(2);
  if (!host || !port || (transport !== 'tcp' && transport !== 'udp')) {
    throw new Error('usage: node send.js HOST PORT tcp|udp < events.json');
  }
  const events = JSON.parse(fs.readFileSync(0, 'utf8'));
  const client = await riemann.createClient({ host, port: Number(port), returnPromise: true });
  client.on('error', (err) => {
    console.error(String(err));
    process.exit(1);
  });
  for (const event of events) {
    const reply = await client.send(client.Event(event), client[transport]);
    console.log(JSON.stringify(reply === undefined ? null : reply));
  }
  await client.disconnect();
}

const timer = setTimeout(() => {
  console.error('timed out');
  process.exit(2);
}, 20000);
timer.unref();

main().then(
  () => process.exit(0),
  (err) => {
    console.error((err && err.stack) || String(err));
    process.exit(1);
  },
);
