import { Redis } from 'ioredis';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, expect, it, onTestFailed } from 'vitest';
import { makeRunDir, onCleanup, pollUntil } from './support/harness.js';
import { expectStatus, http as request } from './support/http.js';
import { checkInvariants, describeNonFinal, violationKinds, waitAllFinal } from './support/invariants.js';
import { LoadRecorder, createPayments, planRefunds, serverErrors, submitRefunds } from './support/load.js';
import { RedisClusterNodes } from './support/redis.js';
import { Scenario, assertNoCrash, logTails, printSummary, setFaults, setupScenario, teardownScenario } from './support/scenario.js';
import { serviceProcess } from './support/service.js';

// Redis Cluster (REDIS_CLUSTER=true): one api process and two workers against a three-master
// cluster of our own. Refunds of every provider go from 202 to final through the workers, the
// merchant-webhook queue delivers, the rate limiter counts, readiness and metrics read the
// queues; then every key is looked up on the node that holds it: each BullMQ queue's keys sit
// in the slot of its own hash tag (so no script touches two slots), and the queues are spread
// over more than one node. Finally the processes stop on SIGTERM without an error. A second
// test starts an API process while one master is down (cluster state 'fail'): it must start
// and serve (the rate limiter fails open), and limit again once the master is back.

const PAYMENTS_PER_PROVIDER = 4;
const REFUNDS_PER_PAYMENT = 3;
const QUEUES = ['refunds-binance_pay', 'refunds-cobo', 'refunds-lean', 'merchant-webhooks', 'reconciliations'];

let s: Scenario | undefined;
let nodes: RedisClusterNodes | undefined;

afterAll(async () => {
  await teardownScenario();
}, 120_000);

/** Every key of the cluster, by the port of the node that holds it. */
async function keysByNode(ports: number[]): Promise<Map<number, string[]>> {
  const out = new Map<number, string[]>();
  for (const port of ports) {
    const node = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await node.connect();
      // Each master answers for its own slots only: KEYS on a node lists that node's keys.
      out.set(port, await node.keys('*'));
    } finally {
      node.disconnect();
    }
  }
  return out;
}

it('runs refunds, webhooks and rate limits on a Redis Cluster, each queue in a slot of its own', async () => {
  onTestFailed(() => {
    process.stdout.write(`\nseed ${s?.seed}\n${logTails(s)}\n`);
  });
  // A merchant's webhook receiver: proves the merchant-webhooks queue works on the cluster too.
  const received: string[] = [];
  const receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      received.push(body);
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
  onCleanup('webhook receiver', () => new Promise<void>((r) => receiver.close(() => r())), () => receiver.close());
  const receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;

  nodes = await RedisClusterNodes.create(makeRunDir('redis-cluster-nodes').dir);
  await nodes.start();
  s = await setupScenario('redis-cluster', [
    { name: 'worker-1', role: 'worker' },
    { name: 'worker-2', role: 'worker' },
  ], { REDIS_URL: nodes.url, REDIS_CLUSTER: 'true' });
  const sc = s;
  await setFaults(sc.api.url, 'binance-pay', { latencyMs: 50, settleAfterMs: 300 });
  await setFaults(sc.api.url, 'cobo', { latencyMs: 50, processAfterMs: 100, settleAfterMs: 300 });
  await setFaults(sc.api.url, 'lean', { latencyMs: 50, settleAfterMs: 300 });
  await expectStatus(201, 'POST', `${sc.api.url}/v1/webhook-endpoints`, {
    headers: { authorization: `Bearer ${sc.merchantKey}` },
    body: { url: receiverUrl },
  });

  const payments = await createPayments(sc.api.url, PAYMENTS_PER_PROVIDER);
  const plan = planRefunds(payments, REFUNDS_PER_PAYMENT, sc.rand);
  const recorder = new LoadRecorder();
  const started = Date.now();
  await submitRefunds(plan, {
    target: () => undefined,
    fallback: sc.api.url,
    merchantKey: sc.merchantKey,
    recorder,
    spreadMs: 3_000,
    concurrency: 6,
    deadline: started + 60_000,
    giveUp: () => !sc.api.isRunning,
  });
  assertNoCrash(sc);
  const finalMs = await waitAllFinal(sc.db, 90_000);
  if (finalMs === undefined) process.stdout.write(`\nrefunds still not final after 90 s:\n${await describeNonFinal(sc.db)}\n`);
  const report = await checkInvariants({ db: sc.db, apiUrl: sc.api.url, merchantKey: sc.merchantKey, payments, recorder });

  // Merchant webhooks: every final refund's event reaches the receiver through the queue.
  const finals = (await sc.db.query<{ id: string; status: string }>(`SELECT id, status FROM refunds WHERE completed_at IS NOT NULL`)).rows;
  const delivered = await pollUntil(async () => {
    const got = new Set(received.map((b) => JSON.parse(b) as { type: string; data: { id: string } }).map((e) => `${e.data.id}:${e.type}`));
    return finals.every((r) => got.has(`${r.id}:refund.${r.status}`)) ? got.size : undefined;
  }, 60_000, 250);

  // The rate limiter answered from the cluster: it sets RateLimit-* only when its script ran
  // (it lets requests through without them when Redis is away), and the key's budget shrinks.
  const limited: number[] = [];
  for (let i = 0; i < 3; i++) {
    const res = await request('GET', `${sc.api.url}/v1/refunds?limit=1`, { headers: { authorization: `Bearer ${sc.merchantKey}` } });
    limited.push(Number(res.headers.get('ratelimit-remaining') ?? NaN));
  }

  // Readiness reads a queue; metrics read every queue's counts.
  const ready = await request('GET', `${sc.api.url}/health/ready`, { timeoutMs: 5_000 });
  const metrics = await request('GET', `${sc.api.url}/metrics`, { timeoutMs: 10_000 });
  const metricsText = String(metrics.body);
  const waitingGauges = QUEUES.slice(0, 4).map((q) => new RegExp(`refund_queue_jobs\\{[^}]*queue="${q}"`).test(metricsText));

  // Where the keys are.
  const prefix = sc.dep.queuePrefix;
  const byNode = await keysByNode(nodes.ports);
  const allKeys = [...byNode.values()].flat();
  const ours = allKeys.filter((k) => k.startsWith(`${prefix}:`));
  const queueKeys = ours.filter((k) => !k.startsWith(`${prefix}:ratelimit:`) && !k.startsWith(`${prefix}:revoked:`));
  // Every queue key carries its queue's own tag: `<prefix>:{<queue>}:<queue>:...`.
  const untagged = queueKeys.filter((k) => !QUEUES.some((q) => k.startsWith(`${prefix}:{${q}}:${q}:`)));
  const nodesByQueue: Record<string, number[]> = {};
  for (const [port, keys] of byNode) {
    for (const q of QUEUES) {
      if (keys.some((k) => k.startsWith(`${prefix}:{${q}}:`))) (nodesByQueue[q] ??= []).push(port);
    }
  }
  const rateLimitKeys = ours.filter((k) => k.startsWith(`${prefix}:ratelimit:{`));

  // A clean stop: SIGTERM, exit 0, and nothing in the logs about closed connections.
  for (const p of [...sc.processes].reverse()) await p.stop();
  const exits = sc.processes.map((p) => ({ name: p.name, code: p.exits.at(-1)?.code, signal: p.exits.at(-1)?.signal }));
  const connectionErrors = sc.processes.flatMap((p) =>
    p.logTail(400).split('\n').filter((l) => /Connection is closed|ClusterAllFailedError|CROSSSLOT|MOVED/.test(l)).map((l) => `${p.name}: ${l.slice(0, 200)}`),
  );

  printSummary('redis cluster: three masters, REDIS_CLUSTER=true', {
    seed: sc.seed,
    nodes: nodes.ports,
    accepted: report.stats.accepted,
    timeToAllFinal: finalMs === undefined ? 'not within 90 s' : `${(finalMs / 1000).toFixed(1)} s`,
    finalStatuses: report.stats.byStatus,
    merchantWebhooksReceived: received.length,
    queueKeys: queueKeys.length,
    nodesByQueue,
    rateLimitKeys: rateLimitKeys.length,
    rateLimitRemaining: limited,
    exits,
    violations: violationKinds(report.violations),
  });

  expect(finalMs).toBeDefined();
  expect(report.violations.slice(0, 30)).toEqual([]);
  expect(serverErrors(recorder)).toEqual([]);
  expect(recorder.byKind('unanswered').map((r) => r.key)).toEqual([]);
  expect(report.stats.accepted).toBe(plan.length);
  expect(delivered).toBeDefined();
  expect(ready.status).toBe(200);
  expect(metrics.status).toBe(200);
  expect(waitingGauges).toEqual([true, true, true, true]);
  expect(untagged).toEqual([]);
  // The refund queues and the webhook queue all hold keys, each on exactly one node ...
  for (const q of QUEUES.slice(0, 4)) expect(nodesByQueue[q], q).toHaveLength(1);
  // ... and not all on the same one: the cluster shares the queues' load.
  expect(new Set(Object.values(nodesByQueue).flat()).size).toBeGreaterThan(1);
  expect(limited.every(Number.isFinite)).toBe(true);
  expect(limited[2]).toBeLessThan(limited[0]!);
  expect(exits.every((e) => e.code === 0 || e.signal === 'SIGTERM')).toBe(true);
  expect(connectionErrors).toEqual([]);
}, 240_000);

it('starts an API process while the cluster is failed (a master down), fails open, and limits again once it is back', async () => {
  onTestFailed(() => {
    process.stdout.write(`\n${logTails(s)}\n`);
  });
  // Needs the first test's cluster and deployment.
  expect(s).toBeDefined();
  expect(nodes).toBeDefined();
  const sc = s!;
  const cluster = nodes!;
  // Node 1, not the seed: the client reaches the cluster, which answers CLUSTERDOWN to everything.
  await cluster.killNode(1);
  const failed = await pollUntil(async () => cluster.clusterState(0) === 'fail', 30_000, 200);
  expect(failed).toBe(true);

  const late = await serviceProcess('api-late', 'api', sc.run.dir, sc.dep);
  sc.processes.push(late);
  // Before the fix, the rate limiter's connect() never settled here and the process never listened.
  await late.start(30_000);
  const auth = { authorization: `Bearer ${sc.merchantKey}` };
  const whileDown = await request('GET', `${late.url}/v1/refunds?limit=1`, { headers: auth, timeoutMs: 10_000 });

  await cluster.startNode(1);
  const back = await pollUntil(async () => cluster.clusterState(0) === 'ok' && cluster.clusterState(1) === 'ok', 60_000, 250);
  const limitedAgain = await pollUntil(async () => {
    const res = await request('GET', `${late.url}/v1/refunds?limit=1`, { headers: auth, timeoutMs: 10_000 });
    return res.status === 200 && res.headers.get('ratelimit-remaining') !== null ? res : undefined;
  }, 60_000, 500);
  await late.stop();

  printSummary('redis cluster: API started while a master is down', {
    whileDown: { status: whileDown.status, rateLimitRemaining: whileDown.headers.get('ratelimit-remaining') },
    clusterBack: back === true,
    limitedAgain: limitedAgain ? limitedAgain.headers.get('ratelimit-remaining') : 'not within 60 s',
  });
  // Fail open: the request is served, without a rate-limit answer (the limiter could not ask Redis).
  expect(whileDown.status).toBe(200);
  expect(whileDown.headers.get('ratelimit-remaining')).toBeNull();
  expect(back).toBe(true);
  expect(limitedAgain).toBeDefined();
  expect(late.unexpectedExits).toEqual([]);
}, 240_000);
