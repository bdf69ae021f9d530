// `npm run bench` here: ROUNDS (3) rounds, each starting an Express and then a Fastify server
// (a child process each, on 127.0.0.1), 5,000 warm-up requests, then N (40,000) POSTs at 64
// connections with autocannon. Prints per run and the medians: requests/s, p99, non-2xx and
// the server's CPU µs per request (process.cpuUsage before and after). Load generator and
// server share the machine, so requests/s move with it; CPU per request is the figure to compare.
// PROFILE=1: the servers run with --cpu-prof (profiles in prof-<kind>/).
import autocannon from 'autocannon';
import { fork } from 'node:child_process';

const N = Number(process.env.N ?? 40_000);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const KINDS = (process.env.KINDS ?? 'express,fastify').split(',');
const body = JSON.stringify({ payment_id: 'pay_0123456789', amount: '12.50', currency: 'USD', reason: 'returned', metadata: { order: 'o-1' } });
const load = (url, amount) =>
  new Promise((resolve, reject) =>
    autocannon(
      { url: `${url}/v1/refunds`, method: 'POST', connections: 64, amount, headers: { 'content-type': 'application/json', 'idempotency-key': 'k-1' }, body },
      (err, result) => (err ? reject(err) : resolve(result)),
    ),
  );
const cpuUs = async (url) => (await (await fetch(`${url}/__cpu`)).json()).us;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const out = Object.fromEntries(KINDS.map((k) => [k, []]));
for (let round = 0; round < ROUNDS; round++) {
  for (const kind of KINDS) {
    const port = 39_100 + round * 10 + KINDS.indexOf(kind);
    const execArgv = process.env.PROFILE === '1' ? ['--cpu-prof', `--cpu-prof-dir=prof-${kind}`] : [];
    const child = fork('dist/server.js', [kind, String(port)], { execArgv });
    await new Promise((resolve) => child.once('message', resolve));
    const url = `http://127.0.0.1:${port}`;
    await load(url, 5_000);
    const before = await cpuUs(url);
    const r = await load(url, N);
    const after = await cpuUs(url);
    const line = { kind, requestsPerSecond: Math.round(r.requests.average), p99Ms: r.latency.p99, errors: r.non2xx + r.errors + r.timeouts, cpuUsPerRequest: Math.round((after - before) / r['2xx']) };
    out[kind].push(line);
    console.log(JSON.stringify(line));
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
  }
}
for (const [kind, lines] of Object.entries(out)) {
  console.log(`${kind}: median ${median(lines.map((l) => l.cpuUsPerRequest))} µs CPU per request, ${median(lines.map((l) => l.requestsPerSecond))} requests/s, p99 ${median(lines.map((l) => l.p99Ms))} ms`);
}
