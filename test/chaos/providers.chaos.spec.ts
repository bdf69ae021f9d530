import { createHmac, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import os from 'node:os';
import { afterAll, expect, it, onTestFailed } from 'vitest';
import { binanceCertSerial, binanceNonce, signBinanceWebhook } from '../../src/providers/binance-pay/binance-pay.signing.js';
import { signCoboResponse } from '../../src/providers/cobo/cobo.signing.js';
import { sleep } from './support/harness.js';
import { freePort } from './support/ports.js';
import { http } from './support/http.js';
import { checkInvariants, describeNonFinal, violationKinds, waitAllFinal } from './support/invariants.js';
import { LoadRecorder, Provider, RefundRequest, createPayments, planRefunds, submitRefunds } from './support/load.js';
import { Scenario, assertNoCrash, logTails, printSummary, setFaults, setupScenario, teardownScenario } from './support/scenario.js';
import { ServiceProcess, serviceProcess } from './support/service.js';

// Providers misbehaving: two api processes (both serving the emulators, each the emulator
// and webhook address of its own half of the deployment; creates spread over both) and two
// workers. Hundreds of refunds over the three providers while the emulators inject, in
// bursts: timeouts after commit, 5xx, 429 with Retry-After, malformed and truncated JSON,
// answers slower than PROVIDER_TIMEOUT_MS allows for, wrong or missing Cobo response
// signatures; all along, duplicated, dropped, delayed and reordered (jittered) webhooks; and
// forged webhooks sent by the test itself. Then the faults stop, the system heals, and the
// money invariants are checked against our database and the emulators' records.

const PAYMENTS_PER_PROVIDER = Number(process.env.CHAOS_PROVIDERS_PAYMENTS ?? 16);
const REFUNDS_PER_PAYMENT = 5;
const BURST_MS = 3_500;
const GAP_MS = 500;
/** Longest wait for every refund to be final once the faults are off. */
const HEAL_TIMEOUT_MS = 45_000;

type Emulator = 'binance-pay' | 'cobo' | 'lean';
const EMULATORS: Emulator[] = ['binance-pay', 'cobo', 'lean'];

/** Faults on during the whole load: webhook trouble, slow settlement, some refusals by the provider. */
const BASELINE: Record<Emulator, Record<string, unknown>> = {
  'binance-pay': { latencyMs: 50, settleAfterMs: 1_500, refundFailRate: 0.05, timestampWindowMs: 10_000 },
  cobo: { latencyMs: 50, processAfterMs: 300, settleAfterMs: 1_000 },
  lean: { latencyMs: 50, settleAfterMs: 1_000, failRate: 0.05 },
};
const WEBHOOK_FAULTS = { duplicateWebhookRate: 0.3, dropWebhookRate: 0.1, webhookDelayMs: 200, webhookJitterMs: 2_500 };

interface Burst {
  name: string;
  on: Partial<Record<Emulator, Record<string, unknown>>>;
  off: Partial<Record<Emulator, Record<string, unknown>>>;
}

const all = (patch: Record<string, unknown>) => ({ 'binance-pay': patch, cobo: patch, lean: patch });

const BURSTS: Burst[] = [
  { name: 'timeouts after commit', on: all({ timeoutAfterCommitRate: 0.3, timeoutAfterCommitDelayMs: 100 }), off: all({ timeoutAfterCommitRate: 0 }) },
  { name: '5xx', on: all({ errorRate: 0.5 }), off: all({ errorRate: 0 }) },
  { name: '429 + Retry-After', on: all({ rateLimitRate: 0.4, rateLimitRetryAfterSeconds: 1 }), off: all({ rateLimitRate: 0 }) },
  { name: 'malformed / truncated JSON', on: all({ malformedResponseRate: 0.35 }), off: all({ malformedResponseRate: 0 }) },
  // PROVIDER_TIMEOUT_MS is 2000: with the work itself, many of these calls time out (after the commit).
  { name: 'slow answers', on: all({ latencyMs: 1_800 }), off: all({ latencyMs: 50 }) },
  {
    name: 'Cobo response signatures',
    on: { cobo: { unsignedResponseRate: 0.3, badSignatureRate: 0.3 } },
    off: { cobo: { unsignedResponseRate: 0, badSignatureRate: 0 } },
  },
];

/** Every fault off (webhooks included), Binance's timestamp window still relaxed for a loaded machine. */
const HEALED: Record<Emulator, Record<string, unknown>> = {
  'binance-pay': {
    latencyMs: 0, errorRate: 0, rateLimitRate: 0, malformedResponseRate: 0, timeoutAfterCommitRate: 0,
    dropWebhookRate: 0, duplicateWebhookRate: 0, webhookDelayMs: 0, webhookJitterMs: 0,
  },
  cobo: {
    latencyMs: 0, errorRate: 0, rateLimitRate: 0, malformedResponseRate: 0, timeoutAfterCommitRate: 0,
    unsignedResponseRate: 0, badSignatureRate: 0, dropWebhookRate: 0, duplicateWebhookRate: 0, webhookDelayMs: 0, webhookJitterMs: 0,
  },
  lean: {
    latencyMs: 0, errorRate: 0, rateLimitRate: 0, malformedResponseRate: 0, timeoutAfterCommitRate: 0,
    dropWebhookRate: 0, duplicateWebhookRate: 0, webhookDelayMs: 0, webhookJitterMs: 0,
  },
};

let s: Scenario | undefined;

afterAll(async () => {
  await teardownScenario();
}, 120_000);

async function applyEach(apiUrl: string, patches: Partial<Record<Emulator, Record<string, unknown>>>): Promise<void> {
  await Promise.all(Object.entries(patches).map(([emulator, patch]) => setFaults(apiUrl, emulator as Emulator, patch!)));
}

interface Forgery {
  provider: Provider;
  kind: 'bad signature' | 'stale timestamp' | 'success signed with a wrong key';
  refundId: string;
  status: number;
  reason?: string;
  ms: number;
}

/**
 * Webhooks an attacker (or a confused proxy) would send, for refunds still in flight: a
 * garbage signature, a genuine one replayed with a stale timestamp, and a validly shaped
 * success signed with a key that is not the provider's. Each must be refused (401).
 */
async function forgeWebhooks(sc: Scenario, urls: string[], wrongRsa: string): Promise<Forgery[]> {
  const creds = await sc.db.query<{ provider: string; data: Record<string, string> }>(`SELECT provider, data FROM sandbox.credentials`);
  const binance = creds.rows.find((r) => r.provider === 'binance_pay')!.data;
  const cobo = creds.rows.find((r) => r.provider === 'cobo')!.data;
  const lean = (await sc.db.query<{ data: { webhookSecret: string } }>(`SELECT data FROM sandbox.lean_credentials`)).rows[0]!.data;
  const serial = binanceCertSerial(binance.webhookPublicKeyPem!);
  const { rows: targets } = await sc.db.query<{ id: string; provider: Provider; payment_id: string; provider_request_id: string; provider_refund_id: string | null; amount: string }>(
    `SELECT id, provider, payment_id, provider_request_id, provider_refund_id, amount::text
       FROM (SELECT r.*, row_number() OVER (PARTITION BY provider ORDER BY (provider_options->>'toAddress' LIKE 'FAIL%') DESC NULLS LAST, created_at) AS n
               FROM refunds r WHERE status = 'processing' AND provider_request_id IS NOT NULL) t
      WHERE n <= 3`,
  );
  const out: Forgery[] = [];
  let i = 0;
  for (const t of targets) {
    const url = urls[i++ % urls.length]!;
    const attempts: Array<{ kind: Forgery['kind']; path: string; body: string; headers: Record<string, string> }> = [];
    const stale = Date.now() - 10 * 60_000;
    if (t.provider === 'binance_pay') {
      const inner = JSON.stringify({
        merchantTradeNo: 'forged',
        totalFee: 100,
        currency: 'USDT',
        refundInfo: { refundRequestId: t.provider_request_id, prepayId: t.payment_id, refundAmount: t.amount, refundedAmount: t.amount, orderAmount: '100', remainingAttempts: 9, payerOpenId: 'x', duplicateRequest: 'N' },
      });
      const body = JSON.stringify({ bizType: 'PAY_REFUND', bizIdStr: t.payment_id, bizStatus: 'REFUND_SUCCESS', data: inner });
      const headers = (key: string, ts: number, signature?: string) => {
        const nonce = binanceNonce();
        const timestamp = String(ts);
        return {
          'BinancePay-Certificate-SN': serial,
          'BinancePay-Nonce': nonce,
          'BinancePay-Timestamp': timestamp,
          'BinancePay-Signature': signature ?? signBinanceWebhook(key, timestamp, nonce, body),
        };
      };
      attempts.push({ kind: 'bad signature', path: '/webhooks/binance-pay', body, headers: headers(binance.webhookPrivateKeyPem!, Date.now(), randomBytes(256).toString('base64')) });
      attempts.push({ kind: 'stale timestamp', path: '/webhooks/binance-pay', body, headers: headers(binance.webhookPrivateKeyPem!, stale) });
      attempts.push({ kind: 'success signed with a wrong key', path: '/webhooks/binance-pay', body, headers: headers(wrongRsa, Date.now()) });
    } else if (t.provider === 'cobo') {
      const body = JSON.stringify({
        event_id: randomUUID(),
        type: 'payment.refund.status.updated',
        created_timestamp: Date.now(),
        data: { data_type: 'PaymentRefund', refund_id: t.provider_refund_id, request_id: t.provider_request_id, status: 'Completed', amount: t.amount, token_id: 'TRON_USDT', transactions: [] },
      });
      const headers = (seed: string, ts: number, signature?: string) => ({
        'Biz-Timestamp': String(ts),
        'Biz-Resp-Signature': signature ?? signCoboResponse(seed, body, String(ts)),
      });
      attempts.push({ kind: 'bad signature', path: '/webhooks/cobo', body, headers: headers(cobo.emulatorSeed!, Date.now(), 'ab'.repeat(64)) });
      attempts.push({ kind: 'stale timestamp', path: '/webhooks/cobo', body, headers: headers(cobo.emulatorSeed!, stale) });
      attempts.push({ kind: 'success signed with a wrong key', path: '/webhooks/cobo', body, headers: headers(randomBytes(32).toString('hex'), Date.now()) });
    } else {
      const event = (timestamp: string) =>
        JSON.stringify({ type: 'refund.completed', payload: { refund_id: t.provider_refund_id ?? randomUUID(), external_reference: t.provider_request_id, status: 'COMPLETED' }, message: 'forged', timestamp, event_id: randomUUID() });
      const sign = (secret: string, body: string) => ({ 'lean-signature': `sha512=${createHmac('sha512', secret).update(body).digest('hex')}` });
      const fresh = event(new Date().toISOString());
      const old = event(new Date(Date.now() - 7 * 3_600_000).toISOString());
      attempts.push({ kind: 'bad signature', path: '/webhooks/lean', body: fresh, headers: { 'lean-signature': `sha512=${'0'.repeat(128)}` } });
      attempts.push({ kind: 'stale timestamp', path: '/webhooks/lean', body: old, headers: sign(lean.webhookSecret, old) });
      attempts.push({ kind: 'success signed with a wrong key', path: '/webhooks/lean', body: fresh, headers: sign(randomBytes(32).toString('hex'), fresh) });
    }
    for (const a of attempts) {
      const t0 = Date.now();
      // Bounded: a loaded machine may be slow to answer, never silent for 30 s.
      const res = await http('POST', `${url}${a.path}`, { headers: a.headers, rawBody: a.body, timeoutMs: 30_000 }).catch(
        (err: Error) => ({ status: 0, body: { reason: err.message } }),
      );
      const reason = typeof res.body === 'object' && res.body ? (res.body as { reason?: string }).reason : undefined;
      out.push({ provider: t.provider, kind: a.kind, refundId: t.id, status: res.status, reason, ms: Date.now() - t0 });
    }
  }
  return out;
}

it('provider faults, forged webhooks and reordered webhooks lose no refund and pay none twice', async () => {
  onTestFailed(() => {
    process.stdout.write(`\nseed ${s?.seed}\n${logTails(s)}\n`);
  });
  const testStarted = Date.now();
  s = await setupScenario('providers', []);
  const sc = s;
  const api1 = sc.api;
  // The second half of the deployment talks to the emulators (and gets its webhooks) through api-2.
  const port2 = await freePort();
  const half2 = { ...sc.dep, env: { ...sc.dep.env, SANDBOX_URL: `http://127.0.0.1:${port2}/sandbox`, PUBLIC_URL: `http://127.0.0.1:${port2}` } };
  const api2 = await serviceProcess('api-2', 'api', sc.run.dir, half2, port2);
  const worker1 = await serviceProcess('worker-1', 'worker', sc.run.dir, sc.dep);
  const worker2 = await serviceProcess('worker-2', 'worker', sc.run.dir, half2);
  const others: ServiceProcess[] = [api2, worker1, worker2];
  await Promise.all(others.map((p) => p.start()));
  sc.processes.push(...others);
  const apis = [api1.url, api2.url];

  for (const e of EMULATORS) {
    await setFaults(api1.url, e, { ...BASELINE[e], ...WEBHOOK_FAULTS });
    await http('DELETE', `${api1.url}/sandbox/${e}/faults/injected`);
  }

  const payments = await createPayments(api1.url, PAYMENTS_PER_PROVIDER);
  // A key that is not Binance's, for the forged webhooks (made now: RSA key generation is slow).
  const wrongRsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const plan = planRefunds(payments, REFUNDS_PER_PAYMENT, sc.rand);
  // The first refund of every payment is created before the bursts begin: a create asks the
  // provider about the payment only the first time (then it is cached), and that lookup is
  // not what this scenario is about (it is retried on transient failures, and would still
  // answer 503 if a burst swallowed every attempt).
  const firstOf = new Map<string, RefundRequest>();
  for (const r of plan) if (!firstOf.has(r.paymentId)) firstOf.set(r.paymentId, r);
  const warmup = [...firstOf.values()];
  const rest = plan.filter((r) => firstOf.get(r.paymentId) !== r);
  const recorder = new LoadRecorder();
  const started = Date.now();
  const target = (_req: RefundRequest, i: number) => apis[i % 2];

  recorder.phase = 'warmup';
  await submitRefunds(warmup, {
    target,
    fallback: api1.url,
    merchantKey: sc.merchantKey,
    recorder,
    spreadMs: 0,
    concurrency: 6,
    deadline: Date.now() + 60_000,
  });

  recorder.phase = 'bursts';
  const loadMs = BURSTS.length * (BURST_MS + GAP_MS);
  const loadStarted = Date.now();
  const load = submitRefunds(rest, {
    target,
    fallback: api1.url,
    merchantKey: sc.merchantKey,
    recorder,
    spreadMs: loadMs - 2_000,
    concurrency: 12,
    deadline: loadStarted + loadMs + 30_000,
  });
  const bursts: Array<{ name: string; atMs: number }> = [];
  let forging: Promise<Forgery[]> = Promise.resolve([]);
  const chaos = (async () => {
    for (const [i, burst] of BURSTS.entries()) {
      bursts.push({ name: burst.name, atMs: Date.now() - started });
      await applyEach(api1.url, burst.on);
      // Alongside the bursts, not in their way.
      if (i === 2) forging = forgeWebhooks(sc, apis, wrongRsa);
      await sleep(Math.max(0, loadStarted + i * (BURST_MS + GAP_MS) + BURST_MS - Date.now()));
      await applyEach(api1.url, burst.off);
      await sleep(Math.max(0, loadStarted + (i + 1) * (BURST_MS + GAP_MS) - Date.now()));
    }
  })();
  await Promise.all([load, chaos]);
  const forgeries = await forging;
  const loadDoneMs = Date.now() - started;

  // Heal: every fault off. Refunds must now all end final on their own.
  recorder.phase = 'healed';
  await applyEach(api1.url, HEALED);
  const healedAt = Date.now();
  assertNoCrash(sc);
  const finalMs = await waitAllFinal(sc.db, HEAL_TIMEOUT_MS);
  if (finalMs === undefined) process.stdout.write(`\nrefunds still not final ${HEAL_TIMEOUT_MS / 1000} s after healing:\n${await describeNonFinal(sc.db)}\n`);

  const injected: Record<string, Record<string, number>> = {};
  const totals: Record<string, number> = {};
  for (const e of EMULATORS) {
    injected[e] = (await http('GET', `${api1.url}/sandbox/${e}/faults/injected`)).body as Record<string, number>;
    for (const [kind, n] of Object.entries(injected[e]!)) totals[kind] = (totals[kind] ?? 0) + n;
  }
  const calls = await sc.db.query<{ provider: string; operation: string; n: number }>(
    `SELECT r.provider, a.operation, count(*)::int AS n FROM refund_attempts a JOIN refunds r ON r.id = a.refund_id GROUP BY 1, 2 ORDER BY 1, 2`,
  );
  const unknowns = await sc.db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM refund_attempts WHERE outcome IN ('unknown', 'retry')`,
  );
  const webhookEvents = await sc.db.query<{ actor: string; n: number }>(
    `SELECT actor, count(*)::int AS n FROM refund_events WHERE actor LIKE 'webhook:%' GROUP BY 1 ORDER BY 1`,
  );

  const report = await checkInvariants({ db: sc.db, apiUrl: api1.url, merchantKey: sc.merchantKey, payments, recorder });
  const fiveXX = recorder.answers.filter((a) => typeof a.status === 'number' && a.status >= 500);
  // The warm-up creates are the first to reference their payments: each asks the provider
  // about the payment (retried on transient failures), and on an overloaded machine all of
  // those attempts can time out, which is answered with the documented 503
  // service_unavailable (the merchant retries). No fault is injected then.
  const warmupLookupFailures = fiveXX.filter((a) => a.phase === 'warmup' && a.status === 503 && a.code === 'service_unavailable');
  const accepted = forgeries.filter((f) => f.status !== 401);
  printSummary('providers: faults at all three emulators, forged and reordered webhooks', {
    seed: sc.seed,
    processes: sc.processes.map((p) => `${p.name}(${p.role})`).join(', '),
    payments: payments.length,
    createRequests: plan.length,
    accepted: report.stats.accepted,
    answers: recorder.histogram(),
    answersByPhase: { warmup: recorder.histogram('warmup'), bursts: recorder.histogram('bursts'), healed: recorder.histogram('healed') },
    createLatency: recorder.latencies(),
    providerCalls: calls.rows.map((r) => `${r.provider}.${r.operation}=${r.n}`).join(' '),
    callsUnknownOrRetry: unknowns.rows[0]?.n ?? 0,
    bursts: bursts.map((b) => `${b.name}@${(b.atMs / 1000).toFixed(1)}s`).join(', '),
    faultsInjected: totals,
    faultsInjectedByEmulator: injected,
    webhookTransitions: Object.fromEntries(webhookEvents.rows.map((r) => [r.actor, r.n])),
    forgedWebhooks: `${forgeries.length} sent, ${forgeries.filter((f) => f.status === 401).length} refused with 401 (slowest answer ${Math.max(0, ...forgeries.map((f) => f.ms))} ms)`,
    loadDone: `${(loadDoneMs / 1000).toFixed(1)} s`,
    timeToAllFinalAfterHealing: finalMs === undefined ? `not within ${HEAL_TIMEOUT_MS / 1000} s` : `${(finalMs / 1000).toFixed(1)} s`,
    scenarioTotal: `${((Date.now() - started) / 1000).toFixed(1)} s from the first create (healed at ${((healedAt - started) / 1000).toFixed(1)} s); setup (Postgres, Redis, 4 processes, payments) ${((started - testStarted) / 1000).toFixed(1)} s`,
    machineLoad: os.loadavg().map((l) => l.toFixed(1)).join(' '),
    finalStatuses: report.stats.byStatus,
    providerRefunds: `${report.stats.providerRefunds} (${report.stats.providerPaid} paid)`,
    violations: violationKinds(report.violations),
  });
  if (report.violations.length) process.stdout.write(`violations:\n  ${report.violations.slice(0, 50).join('\n  ')}\n`);

  expect(report.violations.slice(0, 30)).toEqual([]);
  expect(finalMs).toBeDefined();
  expect(sc.processes.flatMap((p) => p.unexpectedExits)).toEqual([]);
  expect(recorder.byKind('unanswered').map((r) => r.key)).toEqual([]);
  // No create got a 5xx from the faults (not even 503): provider trouble is the workers' business.
  expect(fiveXX.filter((a) => !warmupLookupFailures.includes(a))).toEqual([]);
  expect(report.stats.accepted).toBeGreaterThan(plan.length / 2);
  // Every forged webhook was refused, the stale ones for their timestamp.
  expect(forgeries.length).toBeGreaterThanOrEqual(9);
  expect(accepted).toEqual([]);
  expect(forgeries.filter((f) => f.kind === 'stale timestamp').every((f) => f.reason === 'webhook_timestamp_out_of_window')).toBe(true);
  // The faults really happened (counted by the emulators).
  for (const kind of [
    'timeout_after_commit',
    'server_error',
    'rate_limited',
    'malformed_truncated',
    'malformed_cut_off',
    'malformed_not_json',
    'unsigned_response',
    'bad_signature',
    'webhook_duplicated',
    'webhook_dropped',
    'webhook_jittered',
  ]) {
    expect(totals[kind] ?? 0, kind).toBeGreaterThan(0);
  }
});
