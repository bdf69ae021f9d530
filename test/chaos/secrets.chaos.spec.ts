import fs from 'node:fs';
import { afterAll, expect, it, onTestFailed } from 'vitest';
import { sleep } from './support/harness.js';
import { expectStatus, http } from './support/http.js';
import { waitAllFinal } from './support/invariants.js';
import { LoadRecorder, createPayments, planRefunds, submitRefunds } from './support/load.js';
import { Scenario, inFlightFaults, logTails, printSummary, setupScenario, teardownScenario } from './support/scenario.js';

// Secrets never leave the service: one api process and one worker at LOG_LEVEL=debug run
// refunds on all three providers under provider faults (timeouts, errors, so error paths
// log too), plus requests that carry keys where they do not belong (a query string, a
// wrong header, a bad Authorization), merchant webhooks, a metrics scrape and the OpenAPI
// document. Then every byte the processes logged, /metrics and /docs-json are searched for
// every secret: API keys, the admin key, the metrics token, merchant webhook secrets and
// the providers' credentials (as the emulators generated them).

const METRICS_TOKEN = `chaos_metrics_${'t'.repeat(24)}`;

let s: Scenario | undefined;

afterAll(async () => {
  await teardownScenario();
}, 120_000);

/** Every string under a key that names a secret (private keys, secrets, seeds, API keys, tokens). */
function secretStrings(value: unknown, name = ''): string[] {
  if (typeof value === 'string') {
    return /secret|private|seed|apikey|api_key|token|password/i.test(name) && !/public/i.test(name) && value.length >= 12 ? [value] : [];
  }
  if (value && typeof value === 'object') return Object.entries(value as Record<string, unknown>).flatMap(([k, v]) => secretStrings(v, k));
  return [];
}

/** A secret and the forms it may take in text: as is, and PEM bodies by their longest line. */
function needles(secret: string): string[] {
  if (secret.includes('-----BEGIN')) {
    const lines = secret.split('\n').filter((l) => l.length >= 40 && !l.startsWith('-----'));
    return lines.slice(0, 3);
  }
  return [secret];
}

it('no secret appears in logs, error answers, /metrics or the OpenAPI document', async () => {
  onTestFailed(() => {
    process.stdout.write(`\nseed ${s?.seed}\n${logTails(s)}\n`);
  });
  s = await setupScenario('secrets', [{ name: 'worker-1', role: 'worker' }], {
    LOG_LEVEL: 'debug',
    METRICS_TOKEN,
  });
  const sc = s;
  await inFlightFaults(sc.api.url, { timeoutAfterCommitRate: 0.05 });
  const opsKey = (
    await expectStatus(201, 'POST', `${sc.api.url}/v1/api-keys`, {
      headers: { authorization: `Bearer ${sc.dep.adminKey}` },
      body: { role: 'ops', name: 'secrets ops' },
    })
  ).body.key as string;
  const endpoint = await expectStatus(201, 'POST', `${sc.api.url}/v1/webhook-endpoints`, {
    headers: { authorization: `Bearer ${sc.merchantKey}` },
    body: { url: `${sc.api.url}/health/live` },
  });
  const webhookSecret = endpoint.body.secret as string;

  // Refunds on all providers, with provider faults on.
  const payments = await createPayments(sc.api.url, 4);
  const recorder = new LoadRecorder();
  await submitRefunds(planRefunds(payments, 3, sc.rand), {
    target: () => undefined,
    fallback: sc.api.url,
    merchantKey: sc.merchantKey,
    recorder,
    spreadMs: 3_000,
    concurrency: 6,
    deadline: Date.now() + 60_000,
  });

  // Keys where they do not belong; each must be refused, and none may be echoed or logged.
  const misuse = [
    http('GET', `${sc.api.url}/v1/refunds?api_key=${encodeURIComponent(sc.merchantKey)}&limit=1`),
    http('GET', `${sc.api.url}/v1/refunds?token=${encodeURIComponent(opsKey)}`),
    http('GET', `${sc.api.url}/v1/refunds`, { headers: { 'x-api-key': sc.dep.adminKey } }),
    http('GET', `${sc.api.url}/v1/refunds`, { headers: { authorization: `Basic ${sc.dep.adminKey}` } }),
    http('GET', `${sc.api.url}/v1/refunds`, { headers: { authorization: `Bearer ${sc.dep.adminKey}x` } }),
    http('POST', `${sc.api.url}/v1/refunds`, { headers: { authorization: `Bearer ${sc.merchantKey}` }, body: { apiKey: opsKey } }),
    http('POST', `${sc.api.url}/webhooks/binance-pay`, { body: { secretKey: sc.dep.adminKey } }),
  ];
  const misuseAnswers = await Promise.all(misuse);
  const answerTexts = misuseAnswers.map((a) => JSON.stringify(a.body));

  await waitAllFinal(sc.db, 60_000);
  await sleep(1_500); // merchant webhook deliveries and the last log lines

  const metrics = await http('GET', `${sc.api.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
  expect(metrics.status).toBe(200);
  const docs = await expectStatus(200, 'GET', `${sc.api.url}/docs-json`);

  // What must never appear.
  const { rows: creds } = await sc.db.query(
    `SELECT provider AS name, data FROM sandbox.credentials UNION ALL SELECT 'lean', data FROM sandbox.lean_credentials`,
  );
  const providerSecrets = creds.flatMap((c) => secretStrings(c.data).map((v) => ({ what: `${c.name} credential`, value: v })));
  const secrets = [
    { what: 'admin key', value: sc.dep.adminKey },
    { what: 'merchant key', value: sc.merchantKey },
    { what: 'ops key', value: opsKey },
    { what: 'metrics token', value: METRICS_TOKEN },
    { what: 'merchant webhook secret', value: webhookSecret },
    ...providerSecrets,
  ];
  expect(providerSecrets.length).toBeGreaterThanOrEqual(5);

  const logs = sc.processes.map((p) => ({ where: `${p.name} log`, text: fs.readFileSync(p.logFile, 'utf8') }));
  const haystacks = [
    ...logs,
    { where: '/metrics', text: metrics.body as string },
    { where: '/docs-json', text: JSON.stringify(docs.body) },
    { where: 'error answers', text: answerTexts.join('\n') },
  ];
  const leaks: string[] = [];
  for (const secret of secrets) {
    for (const needle of needles(secret.value)) {
      for (const h of haystacks) {
        const at = h.text.indexOf(needle);
        if (at >= 0) leaks.push(`${secret.what} in ${h.where}: …${h.text.slice(Math.max(0, at - 120), at).replace(/\s+/g, ' ')}[SECRET]…`);
      }
    }
  }
  const logBytes = logs.reduce((n, l) => n + l.text.length, 0);
  printSummary('secrets: logs, answers, /metrics and /docs-json searched', {
    refundsRequested: recorder.outcomes.size,
    answers: recorder.histogram(),
    misuseAnswers: misuseAnswers.map((a) => a.status),
    secretsSearched: secrets.length,
    logLines: logs.reduce((n, l) => n + l.text.split('\n').length, 0),
    logBytes,
    leaks: leaks.length,
  });
  if (leaks.length) process.stdout.write(`leaks:\n  ${leaks.slice(0, 20).join('\n  ')}\n`);
  expect(logBytes).toBeGreaterThan(10_000); // debug logging really ran
  expect(misuseAnswers.slice(0, 5).map((a) => a.status)).toEqual([401, 401, 401, 401, 401]);
  expect(leaks).toEqual([]);
});

