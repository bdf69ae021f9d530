// Micro-benchmark (docs/performance.md, finding 66): the CPU a Node process spends per request
// when requests arrive one at a time, against a closed loop where each wake of its thread
// serves many. A child process serves one Fastify route that does a create's non-I/O work in
// miniature (parse a JSON body, check the amount, hash the body, answer a small object); the
// parent sends it a closed loop of 16 connections, then requests at fixed rates, each alone,
// and reads the child's own CPU (process.cpuUsage) before and after each phase.
// Bounded: 3,000 warm-up requests, 20,000 in the closed loop, 6 s per rate. Run from the
// repository root (FLAGS="..." passes V8/Node flags to the server):
//   node bench/micro/lone-request.mjs
import { fork } from 'node:child_process';
import crypto from 'node:crypto';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const RATES = [50, 200];
const SECONDS_PER_RATE = 6;
const CLOSED_LOOP = { connections: 16, requests: 20_000 };

if (process.argv[2] === 'server') {
  const require = createRequire(path.resolve('package.json'));
  const app = require('fastify')({ logger: false });
  app.post('/refunds', async (req) => {
    const body = req.body;
    if (typeof body.amount !== 'string' || !/^\d+(\.\d+)?$/.test(body.amount)) throw new Error('amount');
    const hash = crypto.createHash('sha256').update(JSON.stringify(body)).digest('hex');
    return { id: crypto.randomUUID(), hash, ...body, status: 'queued', createdAt: new Date().toISOString() };
  });
  app.get('/cpu', async () => process.cpuUsage());
  await app.listen({ port: 0, host: '127.0.0.1' });
  process.send({ port: app.server.address().port });
} else {
  const child = fork(fileURLToPath(import.meta.url), ['server'], { execArgv: (process.env.FLAGS ?? '').split(' ').filter(Boolean) });
  const { port } = await new Promise((resolve) => child.once('message', resolve));
  const agent = new http.Agent({ keepAlive: true, maxSockets: CLOSED_LOOP.connections });
  const body = JSON.stringify({ provider: 'binance_pay', paymentId: 'P1', amount: '12.50', currency: 'USDT', metadata: { order: 1 } });
  const call = (method, route, payload) =>
    new Promise((resolve, reject) => {
      const headers = payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {};
      const req = http.request({ host: '127.0.0.1', port, path: route, method, agent, headers }, (res) => {
        let text = '';
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`${route}: ${res.statusCode}`))));
      });
      req.on('error', reject);
      req.end(payload);
    });
  const post = () => call('POST', '/refunds', body);
  const cpu = async () => JSON.parse(await call('GET', '/cpu'));
  const report = (label, before, after, requests) => {
    const user = (after.user - before.user) / 1000;
    const system = (after.system - before.system) / 1000;
    console.log(`${label}: ${((user + system) / requests).toFixed(3)} ms of CPU per request (user ${user.toFixed(0)} ms, system ${system.toFixed(0)} ms)`);
  };
  try {
    for (let i = 0; i < 3_000; i++) await post();
    let before = await cpu();
    let sent = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CLOSED_LOOP.connections }, async () => {
        while (sent < CLOSED_LOOP.requests) {
          sent++;
          await post();
        }
      }),
    );
    const perSecond = (CLOSED_LOOP.requests / (performance.now() - t0)) * 1000;
    report(`closed loop, ${CLOSED_LOOP.connections} connections, ${perSecond.toFixed(0)}/s`, before, await cpu(), CLOSED_LOOP.requests);
    for (const rate of RATES) {
      const count = rate * SECONDS_PER_RATE;
      before = await cpu();
      const start = performance.now();
      const answers = [];
      for (let i = 0; i < count; i++) {
        const wait = start + (i * 1000) / rate - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        answers.push(post());
      }
      await Promise.all(answers);
      report(`open loop, ${rate}/s, each request alone`, before, await cpu(), count);
    }
  } finally {
    agent.destroy();
    child.kill();
  }
}
