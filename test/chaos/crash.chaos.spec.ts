import { afterAll, expect, it, onTestFailed } from 'vitest';
import { sleep } from './support/harness.js';
import { checkInvariants, describeNonFinal, violationKinds, waitAllFinal } from './support/invariants.js';
import { LoadRecorder, createPayments, planRefunds, serverErrors, submitRefunds } from './support/load.js';
import { Scenario, assertNoCrash, inFlightFaults, logTails, printSummary, setupScenario, teardownScenario } from './support/scenario.js';
import type { ServiceProcess } from './support/service.js';

// Crash: one api process (serving the emulators), two ROLE=worker processes and one ROLE=all
// process. Hundreds of refunds over three providers while workers and the combined process
// are killed with SIGKILL at random moments and restarted.

const PAYMENTS_PER_PROVIDER = Number(process.env.CHAOS_CRASH_PAYMENTS ?? 20);
const REFUNDS_PER_PAYMENT = 5;
const KILLS = Number(process.env.CHAOS_CRASH_KILLS ?? 5);
const LOAD_SPREAD_MS = 20_000;

let s: Scenario | undefined;

afterAll(async () => {
  await teardownScenario();
}, 120_000);

it('kill -9 of workers and of a combined process loses no refund and pays none twice', async () => {
  onTestFailed(() => {
    process.stdout.write(`\nseed ${s?.seed}\n${logTails(s)}\n`);
  });
  // Set up inside the test (not beforeAll), so a failure to start counts as a failed test.
  s = await setupScenario('crash', [
    { name: 'worker-1', role: 'worker' },
    { name: 'worker-2', role: 'worker' },
    { name: 'all-1', role: 'all' },
  ]);
  const sc = s;
  // Latency and slow settlement keep work in flight; some answers are lost after the provider
  // committed (timeoutAfterCommitRate), so unknown outcomes meet the kills too.
  await inFlightFaults(sc.api.url, { timeoutAfterCommitRate: 0.03 });
  const rand = sc.rand;
  const all1 = sc.processes.find((p) => p.name === 'all-1')!;
  const victims = sc.processes.filter((p) => p.role !== 'api');

  const payments = await createPayments(sc.api.url, PAYMENTS_PER_PROVIDER);
  const plan = planRefunds(payments, REFUNDS_PER_PAYMENT, rand);
  const recorder = new LoadRecorder();
  const started = Date.now();

  // A quarter of the creates go to the combined process while it is up; when it dies under a
  // request, the merchant retries the same Idempotency-Key on the api process.
  const load = submitRefunds(plan, {
    target: (_req, i) => (i % 4 === 0 && all1.isRunning ? all1.url : undefined),
    fallback: sc.api.url,
    merchantKey: sc.merchantKey,
    recorder,
    spreadMs: LOAD_SPREAD_MS,
    concurrency: 8,
    deadline: started + 120_000,
    giveUp: () => !sc.api.isRunning,
  });

  // KILLS kills at random moments of the load window; each victim is restarted after a short
  // pause while the others keep working (a victim still restarting is not killed again).
  const killTimes = Array.from({ length: KILLS }, () => 2_000 + rand() * (LOAD_SPREAD_MS - 2_000)).sort((a, b) => a - b);
  const kills: Array<{ name: string; atMs: number; downMs: number }> = [];
  const chaos = (async () => {
    const restarting = new Set<ServiceProcess>();
    const restarts: Array<Promise<void>> = [];
    for (const [i, at] of killTimes.entries()) {
      if (at > Date.now() - started) await sleep(at - (Date.now() - started));
      let up = victims.filter((p) => p.isRunning && !restarting.has(p));
      while (up.length === 0 && Date.now() - started < 60_000) {
        await sleep(200);
        up = victims.filter((p) => p.isRunning && !restarting.has(p));
      }
      if (up.length === 0) break;
      // The third kill takes the combined process when it is up; the others a random one.
      const victim = i === 2 && up.includes(all1) ? all1 : up[Math.floor(rand() * up.length)]!;
      const killedAt = Date.now();
      await victim.kill9();
      restarting.add(victim);
      const downMs = Math.round(300 + rand() * 1_200);
      kills.push({ name: victim.name, atMs: killedAt - started, downMs });
      restarts.push(
        (async () => {
          await sleep(downMs);
          await victim.startSupervised();
          restarting.delete(victim);
        })(),
      );
    }
    await Promise.all(restarts);
  })();

  await Promise.all([load, chaos]);
  const loadDoneMs = Date.now() - started;
  expect(victims.every((p) => p.isRunning)).toBe(true);

  assertNoCrash(sc);
  const finalMs = await waitAllFinal(sc.db, 150_000);
  // Not all final in time: still check (and show) everything else, then fail on both.
  if (finalMs === undefined) process.stdout.write(`\nrefunds still not final after 150 s:\n${await describeNonFinal(sc.db)}\n`);

  const report = await checkInvariants({ db: sc.db, apiUrl: sc.api.url, merchantKey: sc.merchantKey, payments, recorder });
  const unexpectedExits = sc.processes.flatMap((p) => p.unexpectedExits);
  const bootCrashes = sc.processes.flatMap((p) => p.bootCrashes.map((c) => `${p.name}: ${c}`));
  printSummary('crash: kill -9 of workers and a ROLE=all process', {
    seed: sc.seed,
    processes: sc.processes.map((p) => `${p.name}(${p.role}) starts=${p.starts} kills=${p.kills}`).join(', '),
    payments: payments.length,
    createRequests: plan.length,
    accepted: report.stats.accepted,
    answers: recorder.histogram(),
    kills: kills.map((k) => `${k.name}@${(k.atMs / 1000).toFixed(1)}s`).join(' '),
    loadAndRestartsDone: `${(loadDoneMs / 1000).toFixed(1)} s`,
    timeToAllFinalAfterLoad: finalMs === undefined ? 'not within 150 s' : `${(finalMs / 1000).toFixed(1)} s`,
    finalStatuses: report.stats.byStatus,
    providerRefunds: `${report.stats.providerRefunds} (${report.stats.providerPaid} paid)`,
    bootCrashes: bootCrashes.length,
    violations: violationKinds(report.violations),
  });
  if (report.violations.length) process.stdout.write(`violations:\n  ${report.violations.slice(0, 50).join('\n  ')}\n`);

  expect(report.violations.slice(0, 30)).toEqual([]);
  expect(kills.length).toBe(KILLS);
  expect(unexpectedExits).toEqual([]);
  expect(recorder.byKind('unanswered').map((r) => r.key)).toEqual([]);
  // Only a killed process leaves a create unanswered; everything that answers says 202/200,
  // a 4xx, or 503 service_unavailable (the emulator dropped a payment lookup), never a 500.
  expect(serverErrors(recorder)).toEqual([]);
  expect(report.stats.accepted).toBeGreaterThan(plan.length / 2);
  // A process restarted while the others work must come up (contract §1: any number of
  // processes, started at any time).
  expect(bootCrashes).toEqual([]);
});
