// Micro-benchmark (docs/performance.md, finding 31): client CPU and bytes allocated per
// provider call — axios as src/providers/provider-http.ts calls it, an axios instance with
// the fixed options set once, the same with proxy: false, and node:http directly — against a
// local server in a child process answering like Binance Pay's refund endpoint. 64 calls at
// once, keep-alive agent, 20,000 calls per variant after 3,000 to warm up, three rounds.
// Run from the repository root:
//   node bench/micro/provider-call.cjs
'use strict';
const { fork } = require('node:child_process');
const http = require('node:http');
const inspector = require('node:inspector');
const path = require('node:path');

if (process.argv[2] === 'server') {
  const body = JSON.stringify({ status: 'SUCCESS', code: '000000', data: { refundRequestId: 'x'.repeat(32), refundedAmount: '1.00000000', remainingAttempts: 8 } });
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.setHeader('binancepay-signature', 'a'.repeat(88));
      res.end(body);
    });
  });
  // Longer than the client ever leaves a socket idle, so no call meets a socket the server
  // is closing (Node's default is 5 s; the sampled round is slow).
  server.keepAliveTimeout = 120_000;
  server.listen(0, '127.0.0.1', () => process.send(server.address().port));
  return;
}

const axios = require(path.resolve('node_modules/axios'));
const N = 20_000;
const CONCURRENT = 64;
const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
const fixed = { timeout: 10_000, responseType: 'text', transformResponse: (x) => x, validateStatus: () => true, maxRedirects: 0, httpAgent: agent, decompress: true };
const plain = axios.create();
const preset = axios.create(fixed);
const presetNoProxy = axios.create({ ...fixed, proxy: false });
const headers = () => ({
  'content-type': 'application/json',
  'binancepay-timestamp': String(Date.now()),
  'binancepay-nonce': 'n'.repeat(32),
  'binancepay-certificate-sn': 'k'.repeat(64),
  'binancepay-signature': 'S'.repeat(128),
});
const data = JSON.stringify({ refundRequestId: 'r'.repeat(32), prepayId: '123456789', refundAmount: '1.00', reason: 'x' });

const variants = {
  'axios (service)': (url) => plain.request({ method: 'POST', url, headers: headers(), data, ...fixed }),
  'axios preset': (url) => preset.request({ method: 'POST', url, headers: headers(), data }),
  'preset, no proxy': (url) => presetNoProxy.request({ method: 'POST', url, headers: headers(), data }),
  'node:http': (url) =>
    new Promise((resolve, reject) => {
      const req = http.request(url, { method: 'POST', headers: headers(), agent }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve(Buffer.concat(chunks).toString()));
      });
      req.on('error', reject);
      req.end(data);
    }),
};

async function run(call, url, n) {
  let started = 0;
  await Promise.all(Array.from({ length: CONCURRENT }, async () => {
    while (started++ < n) await call(url);
  }));
}

function post(session, method, params) {
  return new Promise((resolve, reject) => session.post(method, params, (err, res) => (err ? reject(err) : resolve(res))));
}

(async () => {
  const server = fork(__filename, ['server']);
  const port = await new Promise((resolve) => server.once('message', resolve));
  const url = `http://127.0.0.1:${port}/binancepay/openapi/order/refund`;
  const session = new inspector.Session();
  session.connect();
  try {
    for (const round of [1, 2, 3]) {
      for (const [name, call] of Object.entries(variants)) {
        await run(call, url, 3_000);
        // Allocation sampling in the last round only: it costs CPU of its own.
        const sampling = round === 3;
        if (sampling) await post(session, 'HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
        const cpu = process.cpuUsage();
        await run(call, url, N);
        const used = process.cpuUsage(cpu);
        let bytes = 0;
        if (sampling) {
          const { profile } = await post(session, 'HeapProfiler.stopSampling');
          const walk = (node) => {
            bytes += node.selfSize;
            node.children.forEach(walk);
          };
          walk(profile.head);
        }
        const kb = sampling ? `, ${(bytes / N / 1024).toFixed(1)} KB allocated per call (CPU inflated by the sampling)` : '';
        console.log(`round ${round} ${name.padEnd(17)} ${((used.user + used.system) / N).toFixed(0)} us of CPU per call${kb}`);
      }
    }
  } finally {
    server.kill();
  }
})();
