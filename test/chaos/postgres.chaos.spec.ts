import { afterAll, expect, it, onTestFailed } from 'vitest';
import { sleep } from './support/harness.js';
import { http } from './support/http.js';
import { checkInvariants, describeNonFinal, violationKinds, waitAllFinal } from './support/invariants.js';
import { LoadRecorder, createPayments, planRefunds, serverErrors, submitRefunds } from './support/load.js';
import { Scenario, assertNoCrash, inFlightFaults, logTails, printSummary, setupScenario, teardownScenario } from './support/scenario.js';

// Postgres: one api process and one worker on a Postgres cluster of our own, restarted
// mid-run (CHAOS_PG_STOPS times, default 2: pg_ctl stop -m fast, down for CHAOS_PG_DOWN_MS,
// pg_ctl start) while merchants keep creating refunds, with a burst of creates in flight at
// each stop. Contract: while it is down the API answers 503 service_unavailable
// (problem+json), never a 500, and it recovers by itself (no process restarted by anyone).

const PAYMENTS_PER_PROVIDER = Number(process.env.CHAOS_PG_PAYMENTS ?? 12);
const REFUNDS_PER_PAYMENT = 4;
/** Several stops: the race between a terminated session and an open transaction is narrow. */
const STOPS_AT_MS = Array.from({ length: Number(process.env.CHAOS_PG_STOPS ?? 2) }, (_, i) => 8_000 + i * 10_000);
const LOAD_SPREAD_MS = 25_000 + (STOPS_AT_MS.length - 2) * 10_000;
const PG_DOWN_MS = Number(process.env.CHAOS_PG_DOWN_MS ?? 5_000);
const BURST = 24;
const BURST_LEAD_MS = Number(process.env.CHAOS_PG_BURST_LEAD_MS ?? 40);

let s: Scenario | undefined;

afterAll(async () => {
  await teardownScenario();
}, 120_000);

it('a Postgres restart mid-run: 503 service_unavailable while down, recovery by itself, invariants hold', async () => {
  onTestFailed(() => {
    process.stdout.write(`\nseed ${s?.seed}\n${logTails(s)}\n`);
  });
  s = await setupScenario('postgres', [{ name: 'worker-1', role: 'worker' }]);
  const sc = s;
  await inFlightFaults(sc.api.url);
  const payments = await createPayments(sc.api.url, PAYMENTS_PER_PROVIDER);
  const plan = planRefunds(payments, REFUNDS_PER_PAYMENT, sc.rand);
  // A burst of creates fired just before each stop, so transactions are open when Postgres
  // terminates their sessions (small amounts: most of them fit).
  const burstPlans = STOPS_AT_MS.map(() => planRefunds(payments, 1, sc.rand, 1, 3).slice(0, BURST));
  const recorder = new LoadRecorder();
  const started = Date.now();

  const load = submitRefunds(plan, {
    target: () => undefined,
    fallback: sc.api.url,
    merchantKey: sc.merchantKey,
    recorder,
    spreadMs: LOAD_SPREAD_MS,
    concurrency: 6,
    deadline: started + 120_000,
    giveUp: () => !sc.api.isRunning,
  });

  const figures: Record<string, unknown> = {};
  const cycles: Array<{ stoppedAtS: string; stopTookMs: number; downS: string; apiRecoveredAfterStartMs: number | string }> = [];
  const probes: Array<{ what: string; status: number | string; code?: string; type?: string | null; retryAfter?: string | null }> = [];
  const auth = { authorization: `Bearer ${sc.merchantKey}` };
  const bursts: Array<Promise<void>> = [];
  const chaos = (async () => {
    for (const [i, stopAtMs] of STOPS_AT_MS.entries()) {
      if (!sc.api.isRunning) break;
      await sleep(Math.max(0, started + stopAtMs - Date.now()));
      bursts.push(
        submitRefunds(burstPlans[i]!, {
          target: () => undefined,
          fallback: sc.api.url,
          merchantKey: sc.merchantKey,
          recorder,
          spreadMs: 0,
          concurrency: BURST,
          deadline: started + 120_000,
          giveUp: () => !sc.api.isRunning,
        }),
      );
      await sleep(BURST_LEAD_MS);
      recorder.phase = 'postgres_down';
      const stopAt = Date.now();
      await sc.pg.stop('fast');
      const stopTookMs = Date.now() - stopAt;
      const someId = recorder.accepted()[0]?.id;
      while (Date.now() - stopAt < PG_DOWN_MS) {
        for (const [what, url] of [
          ['GET /v1/refunds/{id}', `${sc.api.url}/v1/refunds/${someId}`],
          ['GET /v1/refunds', `${sc.api.url}/v1/refunds?limit=5`],
          ['GET /health/ready', `${sc.api.url}/health/ready`],
        ] as const) {
          const res = await http('GET', url, { headers: auth, timeoutMs: 10_000 }).catch((err: Error) => ({
            status: `network: ${err.message}`,
            body: undefined,
            headers: undefined,
          }));
          probes.push({
            what,
            status: res.status,
            code: typeof res.body === 'object' && res.body ? (res.body as { code?: string }).code : undefined,
            type: res.headers?.get('content-type') ?? null,
            retryAfter: res.headers?.get('retry-after') ?? null,
          });
        }
        await sleep(700);
      }
      await sc.pg.start();
      recorder.phase = 'recovering';
      const upAt = Date.now();
      // Recovery by itself: the api answers reads again without anyone restarting it.
      let recoveredMs: number | undefined;
      while (Date.now() - upAt < 60_000 && sc.api.isRunning) {
        const res = await http('GET', `${sc.api.url}/v1/refunds?limit=1`, { headers: auth, timeoutMs: 5_000 }).catch(() => undefined);
        if (res?.status === 200) {
          recoveredMs = Date.now() - upAt;
          break;
        }
        await sleep(200);
      }
      cycles.push({
        stoppedAtS: ((stopAt - started) / 1000).toFixed(1),
        stopTookMs,
        downS: ((upAt - stopAt) / 1000).toFixed(1),
        apiRecoveredAfterStartMs: recoveredMs ?? 'not within 60 s',
      });
      recorder.phase = 'normal';
    }
  })();

  await Promise.all([load, chaos]);
  await Promise.all(bursts);
  figures.restarts = cycles;
  assertNoCrash(sc);
  const finalMs = await waitAllFinal(sc.db, 120_000);
  // Not all final in time: still check (and show) everything else, then fail on both.
  if (finalMs === undefined) process.stdout.write(`\nrefunds still not final after 120 s:\n${await describeNonFinal(sc.db)}\n`);

  const report = await checkInvariants({ db: sc.db, apiUrl: sc.api.url, merchantKey: sc.merchantKey, payments, recorder });
  const unexpectedExits = sc.processes.flatMap((p) => p.unexpectedExits);
  const probeSummary: Record<string, number> = {};
  for (const p of probes) {
    const k = `${p.what} ${p.status}${p.code ? ` ${p.code}` : ''}`;
    probeSummary[k] = (probeSummary[k] ?? 0) + 1;
  }
  printSummary('postgres: pg_ctl stop -m fast, down, start', {
    seed: sc.seed,
    payments: payments.length,
    createRequests: plan.length + burstPlans.flat().length,
    accepted: report.stats.accepted,
    ...figures,
    createAnswersWhileDown: recorder.histogram('postgres_down'),
    createAnswersRecovering: recorder.histogram('recovering'),
    probesWhileDown: probeSummary,
    answersOverall: recorder.histogram(),
    timeToAllFinalAfterLoad: finalMs === undefined ? 'not within 120 s' : `${(finalMs / 1000).toFixed(1)} s`,
    finalStatuses: report.stats.byStatus,
    providerRefunds: `${report.stats.providerRefunds} (${report.stats.providerPaid} paid)`,
    violations: violationKinds(report.violations),
  });
  if (report.violations.length) process.stdout.write(`violations:\n  ${report.violations.slice(0, 50).join('\n  ')}\n`);

  expect(report.violations.slice(0, 30)).toEqual([]);
  // Recovers by itself: no process died, and the api answered again within the bound.
  expect(unexpectedExits).toEqual([]);
  expect(cycles.map((c) => typeof c.apiRecoveredAfterStartMs)).toEqual(STOPS_AT_MS.map(() => 'number'));
  expect(recorder.byKind('unanswered').map((r) => r.key)).toEqual([]);
  // Never a 500: every 5xx anywhere in the run is 503 service_unavailable.
  expect(serverErrors(recorder)).toEqual([]);
  const downCreates = recorder.answers.filter((a) => a.phase === 'postgres_down');
  expect(downCreates.filter((a) => a.status === 503).length).toBeGreaterThan(0);
  // While down, reads are 503 service_unavailable as problem+json with Retry-After
  // (readiness: 503 too).
  const badProbes = probes.filter(
    (p) =>
      p.status !== 503 ||
      (p.what !== 'GET /health/ready' &&
        (p.code !== 'service_unavailable' || !String(p.type).startsWith('application/problem+json') || !p.retryAfter)),
  );
  expect(badProbes).toEqual([]);
});
