import fs from 'node:fs';
import pg from 'pg';
import { RunDir, makeRunDir, onCleanup, rng, runCleanups, seedFromEnv, sweepLeftovers } from './harness.js';
import { expectStatus } from './http.js';
import { createMerchantKey } from './load.js';
import { PgCluster, pgCtlSync } from './postgres.js';
import { freePort } from './ports.js';
import { RedisServer } from './redis.js';
import { Deployment, Role, ServiceProcess, deploymentEnv, serviceProcess } from './service.js';

/** Everything one scenario runs on: its own Postgres, Redis and service processes. */
export interface Scenario {
  label: string;
  seed: number;
  rand: () => number;
  run: RunDir;
  pg: PgCluster;
  redis: RedisServer;
  databaseUrl: string;
  /** Our own view of the service's database (the checks read it). */
  db: pg.Pool;
  dep: Deployment;
  api: ServiceProcess;
  processes: ServiceProcess[];
  merchantKey: string;
}

/**
 * Starts a scenario: temp dir, Postgres cluster (database `refunds`), redis-server, then an
 * api process (serving the emulators) and the other processes, all on 127.0.0.1.
 */
export async function setupScenario(
  label: string,
  others: Array<{ name: string; role: Role }>,
  extraEnv: Record<string, string> = {},
): Promise<Scenario> {
  const swept = sweepLeftovers(pgCtlSync);
  if (swept.length) process.stdout.write(`chaos: cleaned up ${swept.length} leftover run(s) of killed test runs\n`);
  const seed = seedFromEnv();
  const run = makeRunDir(label);
  const pgc = await PgCluster.create(run.dir);
  await pgc.start();
  const databaseUrl = await pgc.createDatabase('refunds');
  const redis = await RedisServer.create(run.dir);
  await redis.start();
  const db = new pg.Pool({ connectionString: databaseUrl, max: 4, connectionTimeoutMillis: 3_000 });
  db.on('error', () => undefined); // our own connections die with Postgres restarts; that is the point
  onCleanup('check pool', () => db.end().catch(() => undefined), () => undefined);
  const apiPort = await freePort();
  const dep = deploymentEnv({ databaseUrl, redisUrl: redis.url, apiPort, extra: extraEnv });
  const apiProc = await serviceProcess('api', 'api', run.dir, dep, apiPort);
  // The api process migrates first; the others then start together.
  await apiProc.start();
  const processes = [apiProc];
  for (const o of others) processes.push(await serviceProcess(o.name, o.role, run.dir, dep));
  await Promise.all(processes.slice(1).map((p) => p.start()));
  const merchantKey = await createMerchantKey(apiProc.url, dep.adminKey);
  return { label, seed, rand: rng(seed), run, pg: pgc, redis, databaseUrl, db, dep, api: apiProc, processes, merchantKey };
}

export async function teardownScenario(): Promise<void> {
  await runCleanups();
}

export async function setFaults(apiUrl: string, provider: 'binance-pay' | 'cobo' | 'lean', faults: Record<string, unknown>): Promise<void> {
  await expectStatus(200, 'PUT', `${apiUrl}/sandbox/${provider}/faults`, { body: faults });
}

/** Latency and slow settlement so work is in flight when things break, plus some provider refusals. */
export async function inFlightFaults(apiUrl: string, opts: { timeoutAfterCommitRate?: number } = {}): Promise<void> {
  const lost = opts.timeoutAfterCommitRate ?? 0;
  await setFaults(apiUrl, 'binance-pay', { latencyMs: 150, settleAfterMs: 1500, refundFailRate: 0.05, timeoutAfterCommitRate: lost, timestampWindowMs: 5000 });
  await setFaults(apiUrl, 'cobo', { latencyMs: 150, processAfterMs: 500, settleAfterMs: 1500, timeoutAfterCommitRate: lost });
  await setFaults(apiUrl, 'lean', { latencyMs: 150, settleAfterMs: 1500, failRate: 0.05, timeoutAfterCommitRate: lost });
}

/** Prints one scenario's figures (and appends them as JSON to CHAOS_SUMMARY_FILE when set). */
export function printSummary(label: string, figures: Record<string, unknown>): void {
  const lines = Object.entries(figures).map(([k, val]) => `  ${k}: ${typeof val === 'string' ? val : JSON.stringify(val)}`);
  process.stdout.write(`\n[chaos] ${label}\n${lines.join('\n')}\n`);
  const file = process.env.CHAOS_SUMMARY_FILE;
  if (file) fs.appendFileSync(file, `${JSON.stringify({ scenario: label, at: new Date().toISOString(), ...figures })}\n`);
}

/**
 * Fails at once, with the dead process's exit and last log lines, when a process died that
 * nobody killed (a crash on a dependency outage is a finding, not something to wait out).
 */
export function assertNoCrash(s: Scenario): void {
  const dead = s.processes.filter((p) => p.unexpectedExits.length > 0);
  if (dead.length === 0) return;
  throw new Error(
    dead
      .map((p) => `${p.name} (${p.role}) died unexpectedly: ${JSON.stringify(p.unexpectedExits)}\n${p.logTail(60)}`)
      .join('\n'),
  );
}

/** The last log lines of every process (for a failing scenario). */
export function logTails(s: Scenario | undefined, lines = 25): string {
  if (!s) return '';
  return s.processes.map((p) => `--- ${p.name} (${p.logFile}) ---\n${p.logTail(lines)}`).join('\n');
}
