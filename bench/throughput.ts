// `npm run bench`: refund throughput against baselines on the same machine (issue 8). Not a test.
//
// Everything runs on 127.0.0.1 and is started (and removed) by this process, with the chaos
// suite's helpers (test/chaos/support): a Postgres cluster of its own (pg_stat_statements
// preloaded; the database is created here and goes with the cluster), a redis-server of its
// own, and the service built into dist/bench (`node dist/bench/src/main.js`): one ROLE=api
// process, which also serves the sandbox emulators (SANDBOX=true), and one ROLE=worker process,
// each with its own QUEUE_PREFIX-scoped keys. Measured in one run, in this order:
//
//   A  baseline: the bare database work of a refund creation from this process through pg
//      at BENCH_CONCURRENCY (64) connections: BEGIN; lock the payment row (FOR UPDATE);
//      INSERT the refund row (the real refunds table, its indexes and constraints); UPDATE
//      the payment's reserved total; COMMIT;
//   B  baseline: bare BullMQ throughput, no-op jobs added (one add per job, 64 at once) and
//      processed (a Worker, concurrency 64) on the same Redis;
//   ingest: POST /v1/refunds with autocannon at 64 connections, unique Idempotency-Keys,
//      spread over many payments (worker process stopped, so the figure is the API's own);
//   ingest, open loop: then creates sent at fixed shares of that rate (BENCH_INGEST_RATES), one
//      every 1/rate s whatever the answers, as merchants send them: latency from each one's
//      scheduled time, and the API's CPU per create and share of a core;
//   end to end: N refunds posted at 64 connections with the worker running, emulator latency
//      0 ms and then 200 ms (settleAfterMs 0): refunds/s from the first created_at to the
//      last completed_at, and time to final (completed_at - created_at) from the database;
//   peak RSS of the service processes (VmRSS sampled every 100 ms, and VmHWM).
//
// Prints a table; writes bench/results/throughput-<timestamp>.json and bench/results/latest.json.
// Ctrl-C, a failure or BENCH_TIMEOUT_MS stop every process and remove the cluster.
//
// Environment (defaults in brackets):
//   BENCH_CONCURRENCY [64]          connections of baseline A, ingest and the end-to-end posts
//   BENCH_BASELINE_SECONDS [10]     baseline A duration (after 2 s of warm-up)
//   BENCH_BULLMQ_JOBS [20000]       baseline B jobs
//   BENCH_INGEST_REQUESTS [20000]   ingest requests (8 per payment, after one warm-up refund each)
//   BENCH_INGEST_RATES [0.05,0.25,0.5,0.75] after the ingest, creates sent at these fractions of its rate,
//                                   open loop (one every 1/rate s whatever the answers; '' turns the steps off)
//   BENCH_INGEST_RATE_SECONDS [8]   how long each of those steps sends (at least 500 requests)
//   BENCH_E2E_REFUNDS [5000]        refunds per end-to-end run
//   BENCH_E2E_LATENCIES [0,200,2000] emulator latencies (ms) of the end-to-end runs (2000: the waiting load
//                                   of 1,000 refunds/s at 200 ms, at the rate this machine's CPU allows)
//   BENCH_E2E_TIMEOUT_MS [120000]   how long one end-to-end run may take to finish
//   BENCH_TIMEOUT_MS [900000]       the whole run
//   BENCH_API_PROCESSES [1]         ROLE=api processes; load is spread over all of them (autocannon URLs),
//                                   the first one's emulators serve every provider call
//   BENCH_EMULATOR_PROCESS [1]      the sandbox emulators in a process of their own (ROLE=api, its own
//                                   Postgres role), the service's processes with SANDBOX_SERVE=false, so the
//                                   provider's CPU and statements are reported apart from the service's;
//                                   0: the first api process serves them (rounds 1-4, and builds before SANDBOX_SERVE)
//   BENCH_PG_SOCKET=1               every connection to Postgres (baseline A's, the service's, the emulators')
//                                   over its Unix socket instead of TCP 127.0.0.1 (DATABASE_URL ...?host=<dir>)
//   BENCH_SERVICE_ENV               extra service environment, e.g. "WORKER_CONCURRENCY=64 DB_POOL_SIZE=20"
//   BENCH_NODE_OPTIONS              Node/V8 flags added to the service processes' NODE_OPTIONS after the heap cap,
//                                   e.g. "--max-semi-space-size=32" (BENCH_SERVICE_ENV splits on spaces)
//   BENCH_CPU_PROF=1                CPU profiles of the service per phase (bench/results/profiles-<ts>/)
//   BENCH_HEAP_PROF=1               allocation profiles instead (where the garbage is allocated, collected
//                                   objects included), per phase, in the same place; not with BENCH_CPU_PROF
//                                   (the same hook, bench/cpu-profile.cjs, takes both kinds)
//   BENCH_LABEL                     a label stored in the JSON (e.g. "before")
//   BENCH_SERVICE_BUILD             another build of the service to measure (a directory holding src/ and
//                                   migrations/ as tsc -p bench/tsconfig.json writes them), e.g. an older commit's
//   BENCH_SERVICE_NODE_MODULES      the node_modules that build runs with, when its dependencies differ from this
//                                   checkout's (e.g. /tmp/before/node_modules for a commit before the move to Fastify)
//   BENCH_NO_LATEST=1               do not overwrite bench/results/latest.json
//   BENCH_KEEP_LOGS=1               keep the service logs (always kept after a failure) in bench/results/logs-<ts>/
import autocannon from 'autocannon';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
// The tests' reader of the Prometheus text format (its only other import is a type).
import { hasMetric, metricSum, parseMetrics, type Labels } from '../test/support/metrics.js';


/** V8 old-space cap of the service's processes in production (Dockerfile, scripts/start-local.sh). */
const HEAP_CAP = '--max-old-space-size=192';
const here = path.dirname(fileURLToPath(import.meta.url));
// Compiled to dist/bench/bench/throughput.js; the service beside it at dist/bench/src/main.js.
const REPO_ROOT = path.resolve(here, '../../..');
const BUILT = path.resolve(here, '..');

const { makeRunDir, onCleanup, pollUntil, runCleanups, sleep, sweepLeftovers } = await import('../test/chaos/support/harness.js');
const { PgCluster, pgCtlSync } = await import('../test/chaos/support/postgres.js');
const { RedisServer } = await import('../test/chaos/support/redis.js');
const { serviceProcess } = await import('../test/chaos/support/service.js');
const { freePort } = await import('../test/chaos/support/ports.js');
const { expectStatus, mapLimit } = await import('../test/chaos/support/http.js');
const { createMerchantKey } = await import('../test/chaos/support/load.js');
type ServiceProcess = Awaited<ReturnType<typeof serviceProcess>>;

const env = process.env;
/** The service processes' Node flags: the heap cap, then BENCH_NODE_OPTIONS (recorded in the JSON). */
const SERVICE_NODE_OPTIONS = [HEAP_CAP, ...(env.BENCH_NODE_OPTIONS ? [env.BENCH_NODE_OPTIONS] : [])];
const num = (name: string, fallback: number) => (env[name] && /^\d+$/.test(env[name]!) ? Number(env[name]) : fallback);
const CONCURRENCY = num('BENCH_CONCURRENCY', 64);
const BASELINE_SECONDS = num('BENCH_BASELINE_SECONDS', 10);
const BULLMQ_JOBS = num('BENCH_BULLMQ_JOBS', 20_000);
const INGEST_REQUESTS = num('BENCH_INGEST_REQUESTS', 20_000);
const E2E_REFUNDS = num('BENCH_E2E_REFUNDS', 5_000);
const INGEST_RATES = (env.BENCH_INGEST_RATES ?? '0.05,0.25,0.5,0.75')
  .split(',')
  .map((s) => Number(s.trim()))
  .filter((f) => Number.isFinite(f) && f > 0 && f <= 1);
const INGEST_RATE_SECONDS = num('BENCH_INGEST_RATE_SECONDS', 8);
const E2E_LATENCIES = (env.BENCH_E2E_LATENCIES ?? '0,200,2000').split(',').map((s) => Number(s.trim())).filter((n) => Number.isFinite(n));
const E2E_TIMEOUT_MS = num('BENCH_E2E_TIMEOUT_MS', 120_000);
const TIMEOUT_MS = num('BENCH_TIMEOUT_MS', 15 * 60_000);
const HEAP_PROF = env.BENCH_HEAP_PROF === '1';
if (HEAP_PROF && env.BENCH_CPU_PROF === '1') {
  process.stderr.write('BENCH_CPU_PROF=1 and BENCH_HEAP_PROF=1: one kind of profile per run\n');
  process.exit(2);
}
const PROFILING = env.BENCH_CPU_PROF === '1' || HEAP_PROF;
const EMULATOR_PROCESS = env.BENCH_EMULATOR_PROCESS !== '0';
const PG_SOCKET = env.BENCH_PG_SOCKET === '1';
/** The Postgres role the emulator process connects as: its backends and statements are told apart by it. */
const EMULATOR_DB_USER = 'bench_emulator';
const API_PROCESSES = Math.max(1, Math.min(8, num('BENCH_API_PROCESSES', 1)));
/** Refunds per payment in the measured phases (Binance allows 10; the 10th must be the exact remainder). */
const PER_PAYMENT = 8;
const MERCHANT = 'M1001';
const TARGETS = { ingestRatio: 0.5, ingestP99Ms: 50, ingestErrors: 0, e2eRatio: 0.25, e2eSlowPerSecond: 1_000, rssMb: 300 };

const log = (msg: string) => process.stdout.write(`[bench] ${msg}\n`);
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
/** The service's CPU per refund (api, worker, its Postgres backends, Redis), without the emulator's. */
const serviceCpuMs = (c: Record<string, number>) => (c.api ?? 0) + (c.worker ?? 0) + (c.postgres ?? 0) + (c.redis ?? 0);
const loadAvg = () => os.loadavg().map((x) => round(x, 2));

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

// ---------------------------------------------------------------------------------- memory

function procKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}

/** Peak VmRSS per named process while a phase runs (sampled every 100 ms). */
class RssSampler {
  private readonly peaks = new Map<string, number>();
  private timer?: NodeJS.Timeout;
  constructor(private readonly procs: () => Array<{ name: string; pid?: number }>) {}
  start(): void {
    this.peaks.clear();
    const sample = () => {
      for (const p of this.procs()) {
        if (!p.pid) continue;
        const kb = procKb(p.pid, 'VmRSS');
        if (Number.isFinite(kb)) this.peaks.set(p.name, Math.max(this.peaks.get(p.name) ?? 0, kb));
      }
    };
    sample();
    this.timer = setInterval(sample, 100);
  }
  stop(): Record<string, number> {
    clearInterval(this.timer);
    return Object.fromEntries([...this.peaks].map(([k, kb]) => [k, round(kb / 1024)]));
  }
}

/** Heap figures from a process's Prometheus /metrics (prom-client defaults), in MB. */
async function heapMb(url: string): Promise<Record<string, number> | undefined> {
  try {
    const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) });
    const text = await res.text();
    const pick = (name: string) => {
      const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(text);
      return m ? round(Number(m[1]) / 2 ** 20) : NaN;
    };
    return {
      rss: pick('process_resident_memory_bytes'),
      heapTotal: pick('nodejs_heap_size_total_bytes'),
      heapUsed: pick('nodejs_heap_size_used_bytes'),
      external: pick('nodejs_external_memory_bytes'),
    };
  } catch {
    return undefined;
  }
}

/** What a process's /metrics says of its runtime: see runtimeStats(). */
interface RuntimeStats {
  /** Time spent in garbage collection since the process started, in ms. */
  gcMs: number;
  /** GC pauses since the process started that took over 10 ms and over 100 ms. */
  gcPausesOver10Ms: number;
  gcPausesOver100Ms: number;
  /**
   * Event-loop delay since the previous scrape of /metrics (prom-client resets it on each), ms:
   * the intervals of a 10 ms timer (monitorEventLoopDelay's default resolution), so an idle
   * loop reads ~10 and a loop blocked for 50 ms reads 50-60 (where in a tick the block starts).
   */
  loopDelay: { p50Ms: number; p99Ms: number; maxMs: number };
  /** refund_create_stage_duration_seconds since the process started, per stage (API processes). */
  createStages: Record<string, StageHistogram>;
}

/** One stage's histogram: observations, their sum (s) and the cumulative count up to each bucket's bound (s). */
interface StageHistogram {
  count: number;
  sumS: number;
  buckets: Array<[number, number]>;
}

/**
 * What the creates of a phase spent in each step in the API process (from two scrapes of
 * refund_create_stage_duration_seconds): how many, their mean, and their p99 read from the
 * buckets (linear within the bucket it falls in, so only as fine as the buckets: 5-15 ms
 * wide from 10 to 50 ms, 25 ms up to 100, 150 ms up to 250; `p99Above` when it lies past the
 * last bound, which p99Ms then is).
 */
function stagesBetween(before: Record<string, StageHistogram>, after: Record<string, StageHistogram>) {
  const out: Record<string, { count: number; meanMs: number; p99Ms: number; p99Above?: true }> = {};
  for (const [stage, h] of Object.entries(after)) {
    const b = before[stage];
    const count = h.count - (b?.count ?? 0);
    if (count <= 0) continue;
    const cumulative = h.buckets.map(([le, n]) => [le, n - (b?.buckets.find(([l]) => l === le)?.[1] ?? 0)] as [number, number]);
    const rank = 0.99 * count;
    let p99Ms = NaN;
    let above = false;
    let lower = 0;
    let below = 0;
    for (const [le, n] of cumulative) {
      if (n >= rank) {
        above = !Number.isFinite(le);
        p99Ms = above ? 1000 * lower : 1000 * (lower + ((le - lower) * (rank - below)) / Math.max(n - below, 1));
        break;
      }
      [lower, below] = [le, n];
    }
    out[stage] = { count, meanMs: round((1000 * (h.sumS - (b?.sumS ?? 0))) / count, 1), p99Ms: round(p99Ms, 0), ...(above ? { p99Above: true as const } : {}) };
  }
  return out;
}

/**
 * A service process's GC time and pauses (prom-client's nodejs_gc_duration_seconds, a
 * PerformanceObserver on 'gc', summed over GC kinds) and its event-loop delay
 * (nodejs_eventloop_lag_*, from monitorEventLoopDelay). Undefined when the process does not
 * answer or refuses. The loop delay covers the time since the last scrape, so a phase that
 * scrapes at its start and its end gets its own.
 */
async function runtimeStats(url: string): Promise<RuntimeStats | undefined> {
  try {
    const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) });
    // A refusal (e.g. METRICS_TOKEN set through BENCH_SERVICE_ENV) is no figures, not zeros.
    if (!res.ok) return undefined;
    const samples = parseMetrics(await res.text());
    // NaN when the metric is absent, so a missing figure never reads as zero.
    const sumOf = (name: string, labels: Labels = {}) => (hasMetric(samples, name, labels) ? metricSum(samples, name, labels) : NaN);
    const count = sumOf('nodejs_gc_duration_seconds_count');
    const upTo = (le: string) => sumOf('nodejs_gc_duration_seconds_bucket', { le });
    const gauge = (name: string) => round(1000 * sumOf(name), 1);
    const createStages: Record<string, StageHistogram> = {};
    const stageOf = (stage: string) => (createStages[stage] ??= { count: 0, sumS: 0, buckets: [] });
    for (const { name, labels, value } of samples) {
      if (!name.startsWith('refund_create_stage_duration_seconds_')) continue;
      const h = stageOf(labels.stage ?? '?');
      if (name.endsWith('_sum')) h.sumS = value;
      else if (name.endsWith('_count')) h.count = value;
      else if (name.endsWith('_bucket')) h.buckets.push([labels.le === '+Inf' ? Infinity : Number(labels.le), value]);
    }
    return {
      gcMs: sumOf('nodejs_gc_duration_seconds_sum') * 1000,
      gcPausesOver10Ms: count - upTo('0.01'),
      gcPausesOver100Ms: count - upTo('0.1'),
      loopDelay: { p50Ms: gauge('nodejs_eventloop_lag_p50_seconds'), p99Ms: gauge('nodejs_eventloop_lag_p99_seconds'), maxMs: gauge('nodejs_eventloop_lag_max_seconds') },
      createStages,
    };
  } catch {
    return undefined;
  }
}

// ------------------------------------------------------------------------------------- cpu

const TICK_MS = 10; // USER_HZ = 100 on Linux

/** utime + stime (+ the reaped children's, with children=true) of a process, in ms. */
function cpuMs(pid: number, children = false): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields 14-17 of stat(5) are f[11..14] after pid, comm and state
    const own = Number(f[11]) + Number(f[12]);
    return (children ? own + Number(f[13]) + Number(f[14]) : own) * TICK_MS;
  } catch {
    return 0;
  }
}

/**
 * CPU of the Postgres cluster: the postmaster (with its reaped children) and its live
 * backends; `emulator` is the part of the live backends of the emulator's role (their process
 * title names the user), `total` all of it.
 */
function postgresCpuMs(postmasterPid: number): { total: number; emulator: number } {
  let total = cpuMs(postmasterPid, true);
  let emulator = 0;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== postmasterPid) continue;
      const ms = cpuMs(Number(entry));
      total += ms;
      if (fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').startsWith(`postgres: ${EMULATOR_DB_USER} `)) emulator += ms;
    } catch {
      // gone
    }
  }
  return { total, emulator };
}

/** CPU ms used by each component between start() and stop(). */
class CpuMeter {
  private before: Record<string, number> = {};
  constructor(private readonly read: () => Record<string, number>) {}
  start(): void {
    this.before = this.read();
  }
  stop(): Record<string, number> {
    const after = this.read();
    return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, Math.round(v - (this.before[k] ?? 0))]));
  }
}

// -------------------------------------------------------------------------------- postgres

async function statements(db: pg.Pool, enabled: boolean): Promise<unknown[]> {
  if (!enabled) return [];
  const { rows } = await db.query(
    `SELECT calls::int, round(total_exec_time::numeric, 1)::float AS total_ms, round(mean_exec_time::numeric, 3)::float AS mean_ms,
            rows::int, left(regexp_replace(query, '\\s+', ' ', 'g'), 160) AS query
       FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
      ORDER BY total_exec_time DESC LIMIT 25`,
  );
  return rows;
}

/**
 * Row writes per table (pg_stat_user_tables): inserts, updates and the share of updates that
 * were HOT (no new index entries; finding 38). Cumulative counters, read before and after.
 */
const WRITE_TABLES = ['refunds', 'payments', 'refund_attempts', 'refund_events'];
type RowWrites = Record<string, { ins: number; upd: number; hot: number }>;

async function rowWrites(db: pg.Pool): Promise<RowWrites> {
  // The statistics of other backends reach the shared counters within a second of their
  // commit (stats_fetch_consistency aside); the callers read after a drain, well past that.
  const { rows } = await db.query(
    `SELECT relname, n_tup_ins::bigint::float AS ins, n_tup_upd::bigint::float AS upd, n_tup_hot_upd::bigint::float AS hot
       FROM pg_stat_user_tables WHERE schemaname = 'public' AND relname = ANY($1::text[])`,
    [WRITE_TABLES],
  );
  return Object.fromEntries(rows.map((r) => [r.relname as string, { ins: r.ins as number, upd: r.upd as number, hot: r.hot as number }]));
}

function rowWritesPer(before: RowWrites, after: RowWrites, units: number): Record<string, { inserts: number; updates: number; hotShare: number }> {
  const out: Record<string, { inserts: number; updates: number; hotShare: number }> = {};
  for (const t of WRITE_TABLES) {
    const a = after[t];
    const b = before[t] ?? { ins: 0, upd: 0, hot: 0 };
    if (!a) continue;
    const upd = a.upd - b.upd;
    out[t] = { inserts: round((a.ins - b.ins) / units, 2), updates: round(upd / units, 2), hotShare: upd ? round((a.hot - b.hot) / upd, 2) : NaN };
  }
  return out;
}

/**
 * Connections the kernel refused because a listening socket's accept queue was full
 * (`TcpExtListenOverflows` in /proc/net/netstat; the client resends its SYN after 1 s, then
 * 3 s). Machine-wide, so it counts only what runs here during the phase: the bench's own
 * processes. Undefined where the file is not there.
 */
function listenOverflows(): number | undefined {
  try {
    const lines = fs.readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((l) => l.startsWith('TcpExt:'));
    const names = lines[0]?.split(/\s+/) ?? [];
    const values = lines[1]?.split(/\s+/) ?? [];
    const i = names.indexOf('ListenOverflows');
    return i > 0 ? Number(values[i]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * How many connections wait in each listed port's accept queue now: established by the
 * kernel, not yet accepted by the process (`rx_queue` of the port's LISTEN line in
 * /proc/net/tcp). A Node process accepts one connection per turn of its event loop (libuv
 * since 1.45), so under load a burst of new connections waits here for seconds
 * (finding 57). Undefined where the file is not there.
 */
function acceptQueues(ports: readonly number[]): Map<number, number> | undefined {
  try {
    const out = new Map<number, number>();
    const wanted = new Map(ports.map((port) => [`:${port.toString(16).toUpperCase().padStart(4, '0')}`, port]));
    for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n')) {
      // sl local_address rem_address st tx_queue:rx_queue ...; st 0A is LISTEN.
      const [, local, , state, queues] = line.trim().split(/\s+/);
      if (state !== '0A' || !local) continue;
      const port = wanted.get(local.slice(local.indexOf(':')));
      if (port !== undefined) out.set(port, parseInt(queues!.split(':')[1]!, 16));
    }
    return out;
  } catch {
    return undefined;
  }
}

async function resetStatements(db: pg.Pool, enabled: boolean): Promise<void> {
  if (enabled) await db.query(`SELECT pg_stat_statements_reset()`);
}

/**
 * Redis commands run since the last reset (`CONFIG RESETSTAT`), from `INFO commandstats`: the
 * scripts clients ran (EVALSHA; BullMQ's work is mostly Lua scripts: add, move to active, to
 * delayed, to completed, remove), and all commands, counting those the scripts ran inside
 * Redis. Like the statements, they count work independently of the machine's speed. The
 * bench's own sampling of the active count is in both (a script, ~4 calls a second: ~0.02 per
 * refund). A count is not a cost: a script's commands differ in weight (an LREM scans a list).
 */
async function redisCommands(client: Redis): Promise<{ total: number; scripts: number; byCommand: Record<string, number> }> {
  const info = await client.info('commandstats');
  const byCommand: Record<string, number> = {};
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) byCommand[m[1]!] = Number(m[2]);
  const total = Object.values(byCommand).reduce((a, b) => a + b, 0);
  const scripts = (byCommand.evalsha ?? 0) + (byCommand.eval ?? 0) + (byCommand.fcall ?? 0);
  return { total, scripts, byCommand };
}

/** Statements the emulator process ran (its own Postgres role) since the last reset. */
async function emulatorCalls(db: pg.Pool, enabled: boolean): Promise<number> {
  if (!enabled || !EMULATOR_PROCESS) return NaN;
  const { rows } = await db.query(
    `SELECT COALESCE(sum(calls), 0)::int AS n FROM pg_stat_statements
      WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND userid = (SELECT oid FROM pg_roles WHERE rolname = $1)`,
    [EMULATOR_DB_USER],
  );
  return rows[0].n as number;
}

async function totalCalls(db: pg.Pool, enabled: boolean): Promise<number> {
  if (!enabled) return NaN;
  const { rows } = await db.query(
    `SELECT COALESCE(sum(calls), 0)::int AS n FROM pg_stat_statements
      WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND query NOT ILIKE '%pg_stat_statements%'`,
  );
  return rows[0].n as number;
}

// ------------------------------------------------------------------------------ baseline A

interface Baseline {
  perSecond: number;
  transactions: number;
  seconds: number;
  p50Ms: number;
  p99Ms: number;
}

/** BEGIN; SELECT ... FOR UPDATE; INSERT INTO refunds; UPDATE reserved; COMMIT at CONCURRENCY connections. */
async function baselineA(
  url: string,
  meter?: { start(): void; stop(): Record<string, number> },
  again = false,
): Promise<Baseline & { cpuMs?: Record<string, number> }> {
  const payments = 4096;
  // Measured again later in the run: the tables are there.
  if (again) return baselineLoad(url, payments, meter);
  const setup = new pg.Client({ connectionString: url });
  await setup.connect();
  try {
    await setup.query(`INSERT INTO merchants (id) VALUES ('MBASE') ON CONFLICT DO NOTHING`);
    await setup.query(
      `INSERT INTO payments (provider, payment_id, merchant_id, amount, currency, status)
       SELECT 'binance_pay', 'base-' || g, 'MBASE', 1000000, 'USDT', 'PAID' FROM generate_series(1, $1::int) g`,
      [payments],
    );
    // The payment's reserved total lives in a table of its own (our schema sums refunds instead).
    await setup.query(
      `CREATE TABLE bench_reserved (provider text, payment_id text, amount numeric(38, 18) NOT NULL,
                                    reserved numeric(38, 18) NOT NULL DEFAULT 0, PRIMARY KEY (provider, payment_id))`,
    );
    await setup.query(
      `INSERT INTO bench_reserved (provider, payment_id, amount) SELECT 'binance_pay', 'base-' || g, 1000000 FROM generate_series(1, $1::int) g`,
      [payments],
    );
    await setup.query(`ANALYZE`);
  } finally {
    await setup.end();
  }
  return baselineLoad(url, payments, meter);
}

/** Baseline A's load, on the tables baselineA set up. */
async function baselineLoad(
  url: string,
  payments: number,
  meter?: { start(): void; stop(): Record<string, number> },
): Promise<Baseline & { cpuMs?: Record<string, number> }> {
  const pool = new pg.Pool({ connectionString: url, max: CONCURRENCY });
  const latencies: number[] = [];
  let measuring = false;
  let stop = false;
  const one = async (client: pg.PoolClient) => {
    const paymentId = `base-${1 + Math.floor(Math.random() * payments)}`;
    const t0 = performance.now();
    await client.query('BEGIN');
    try {
      const { rows } = await client.query(
        `SELECT amount, reserved FROM bench_reserved WHERE provider = 'binance_pay' AND payment_id = $1 FOR UPDATE`,
        [paymentId],
      );
      if (Number(rows[0].amount) - Number(rows[0].reserved) < 0.01) throw new Error('baseline payment exhausted');
      await client.query(
        `INSERT INTO refunds (id, merchant_id, provider, payment_id, amount, currency, status, reason,
                              idempotency_key, request_hash, next_check_at)
         VALUES ($1, 'MBASE', 'binance_pay', $2, 0.01, 'USDT', 'queued', 'requested_by_customer', $3, 'h', 'infinity')`,
        [randomUUID(), paymentId, randomUUID()],
      );
      await client.query(`UPDATE bench_reserved SET reserved = reserved + 0.01 WHERE provider = 'binance_pay' AND payment_id = $1`, [
        paymentId,
      ]);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK');
      throw err;
    }
    if (measuring) latencies.push(performance.now() - t0);
  };
  const loops = Array.from({ length: CONCURRENCY }, async () => {
    const client = await pool.connect();
    try {
      while (!stop) await one(client);
    } finally {
      client.release();
    }
  });
  await sleep(2_000); // warm-up: connections, plans, caches
  measuring = true;
  meter?.start();
  const t0 = performance.now();
  await sleep(BASELINE_SECONDS * 1000);
  measuring = false;
  const cpuMs = meter?.stop();
  const seconds = (performance.now() - t0) / 1000;
  const count = latencies.length;
  stop = true;
  await Promise.all(loops);
  await pool.end();
  latencies.sort((a, b) => a - b);
  return {
    perSecond: Math.round(count / seconds),
    transactions: count,
    seconds: round(seconds, 2),
    p50Ms: round(percentile(latencies, 50), 2),
    p99Ms: round(percentile(latencies, 99), 2),
    cpuMs,
  };
}

// ------------------------------------------------------------------------------ baseline B

async function baselineB(redisUrl: string, prefix: string): Promise<{ perSecond: number; jobs: number; seconds: number }> {
  const u = new URL(redisUrl);
  const connection = { host: u.hostname, port: Number(u.port || 6379) };
  const queue = new Queue('bench-noop', { prefix, connection });
  let done = 0;
  let resolveAll!: () => void;
  const all = new Promise<void>((r) => (resolveAll = r));
  const worker = new Worker(
    'bench-noop',
    async () => {
      done++;
      if (done === BULLMQ_JOBS) resolveAll();
    },
    { prefix, connection: { ...connection, maxRetriesPerRequest: null }, concurrency: CONCURRENCY, autorun: false },
  );
  await worker.waitUntilReady();
  void worker.run();
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < BULLMQ_JOBS) {
        const i = next++;
        await queue.add('noop', { i }, { jobId: `j${i}`, removeOnComplete: true, removeOnFail: true });
      }
    }),
  );
  await Promise.race([all, sleep(120_000)]);
  const seconds = (performance.now() - t0) / 1000;
  await worker.close();
  await queue.obliterate({ force: true }).catch(() => undefined);
  await queue.close();
  return { perSecond: Math.round(done / seconds), jobs: done, seconds: round(seconds, 2) };
}

// ------------------------------------------------------------------------------ the service

interface Post {
  key: string;
  body: string;
}

/** Binance Pay payments of 100 USDT at the sandbox. */
async function createPayments(api: string, n: number): Promise<string[]> {
  return mapLimit(Array.from({ length: n }, (_, i) => i), 16, async () => {
    const res = await expectStatus(201, 'POST', `${api}/sandbox/payments`, {
      body: { provider: 'binance_pay', amount: '100.00', currency: 'USDT' },
    });
    return res.body.paymentId as string;
  });
}

/** `perPayment` creates per payment, interleaved so that concurrent requests hit different payments. */
function plan(prefix: string, payments: string[], perPayment: number, amount = '0.01'): Post[] {
  const posts: Post[] = [];
  for (let round = 0; round < perPayment; round++) {
    for (const paymentId of payments) {
      const key = `${prefix}-${randomUUID()}`;
      posts.push({
        key,
        body: JSON.stringify({ provider: 'binance_pay', paymentId, amount, currency: 'USDT', reason: 'requested_by_customer' }),
      });
    }
  }
  return posts;
}

interface LoadResult {
  requests: number;
  ok: number;
  errors: number;
  statusCodes: Record<string, number>;
  seconds: number;
  perSecond: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  firstErrors: string[];
}

/**
 * Sends the posts open loop: the i-th at start + i/rate seconds, whatever the answers so far
 * (as merchants send them), over up to CONCURRENCY keep-alive connections per API process; a
 * post that finds them all busy waits for one in the agent. Each latency counts from the
 * post's scheduled time, so a server that falls behind shows as latency rather than as fewer
 * requests sent (no coordinated omission). autocannon's own rate option is not open loop:
 * each connection sends its share of a second back to back, then pauses until the next
 * second. Latency percentiles are of the 2xx answers; failures are counted apart. Bounded:
 * each request settles once (answer, error, close or its 30 s timeout), and whatever has not
 * settled `deadlineMs` after the start is counted as failed.
 */
async function postAtRate(apis: string[], merchantKey: string, posts: Post[], rate: number, deadlineMs: number): Promise<LoadResult> {
  const urls = apis.map((api) => new URL('/v1/refunds', api));
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const latencies: number[] = [];
  const statusCodes: Record<string, number> = {};
  const firstErrors: string[] = [];
  let errors = 0;
  const interval = 1000 / rate;
  const started = performance.now();
  let lastResponseAt = started;
  await new Promise<void>((resolve) => {
    let sent = 0;
    let settled = 0;
    let over = false;
    const fail = (code: string, detail: string) => {
      statusCodes[code] = (statusCodes[code] ?? 0) + 1;
      errors++;
      if (firstErrors.length < 5) firstErrors.push(`${code} ${detail.slice(0, 200)}`);
    };
    const end = () => {
      over = true;
      clearTimeout(deadline);
      resolve();
    };
    const deadline = setTimeout(() => {
      // Not sent or not answered in time: failures, so a stalled API ends the step.
      for (let i = settled; i < posts.length; i++) fail('deadline', `not answered within ${deadlineMs} ms`);
      end();
    }, deadlineMs);
    if (posts.length === 0) return end();
    const tick = () => {
      if (over) return;
      const now = performance.now();
      while (sent < posts.length && started + sent * interval <= now) {
        const scheduled = started + sent * interval;
        const url = urls[sent % urls.length]!;
        const p = posts[sent++]!;
        let done = false;
        // The one way a request settles, whichever of its events comes first.
        const settle = (status: number | undefined, detail: string) => {
          if (done || over) return;
          done = true;
          lastResponseAt = performance.now();
          if (status !== undefined && status >= 200 && status <= 299) {
            statusCodes[String(status)] = (statusCodes[String(status)] ?? 0) + 1;
            latencies.push(lastResponseAt - scheduled);
          } else {
            fail(status === undefined ? 'error' : String(status), detail);
          }
          if (++settled === posts.length) end();
        };
        const req = http.request(
          {
            agent,
            host: url.hostname,
            port: url.port,
            path: url.pathname,
            method: 'POST',
            headers: {
              'content-type': 'application/json',
              'content-length': Buffer.byteLength(p.body),
              authorization: `Bearer ${merchantKey}`,
              'idempotency-key': p.key,
            },
            timeout: 30_000,
          },
          (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => (body += chunk));
            res.on('end', () => settle(res.statusCode, body));
            // Cut off after the headers: no 'end' and no request error follow.
            res.on('close', () => settle(undefined, 'connection closed before the answer ended'));
          },
        );
        req.on('timeout', () => {
          settle(undefined, 'timeout');
          req.destroy();
        });
        req.on('error', (err) => settle(undefined, err.message));
        req.on('close', () => settle(undefined, 'connection closed without an answer'));
        req.end(p.body);
      }
      if (sent < posts.length) setTimeout(tick, Math.max(0, started + sent * interval - performance.now()));
    };
    tick();
  });
  agent.destroy();
  latencies.sort((x, y) => x - y);
  const at = (q: number) => round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN, 1);
  const seconds = (lastResponseAt - started) / 1000;
  return {
    requests: posts.length,
    ok: posts.length - errors,
    errors,
    statusCodes,
    seconds: round(seconds, 2),
    perSecond: Math.round((posts.length - errors) / seconds),
    p50Ms: at(0.5),
    p90Ms: at(0.9),
    p99Ms: at(0.99),
    maxMs: round(latencies[latencies.length - 1] ?? NaN, 1),
    firstErrors,
  };
}

/** Sends every post once with autocannon at CONCURRENCY connections. */
async function post(api: string | string[], merchantKey: string, posts: Post[]): Promise<LoadResult> {
  let next = 0;
  const firstErrors: string[] = [];
  // The duration is timed here: with `amount`, autocannon ends (and stops its own clock)
  // only at its next one-second sample, so its `duration` is the time rounded up to a whole
  // second (finding 44).
  const started = performance.now();
  let lastResponseAt = started;
  const result = await autocannon({
    url: api,
    connections: Math.min(CONCURRENCY, posts.length),
    amount: posts.length,
    timeout: 30,
    requests: [
      {
        method: 'POST',
        path: '/v1/refunds',
        setupRequest: (req: autocannon.Request) => {
          const p = posts[next++ % posts.length]!;
          return {
            ...req,
            headers: {
              'content-type': 'application/json',
              authorization: `Bearer ${merchantKey}`,
              'idempotency-key': p.key,
            },
            body: p.body,
          };
        },
        onResponse: (status: number, body: string) => {
          lastResponseAt = performance.now();
          if ((status < 200 || status > 299) && firstErrors.length < 5) firstErrors.push(`${status} ${body.slice(0, 200)}`);
        },
      },
    ],
  } as autocannon.Options);
  const statusCodes: Record<string, number> = {};
  for (const [code, v] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = Number((v as { count: number }).count);
  const ok = result['2xx'];
  const seconds = (lastResponseAt - started) / 1000;
  return {
    requests: result.requests.total,
    ok,
    errors: result.non2xx + result.errors + result.timeouts,
    statusCodes,
    seconds: round(seconds, 2),
    perSecond: Math.round(ok / seconds),
    p50Ms: result.latency.p50,
    p90Ms: result.latency.p90,
    p99Ms: result.latency.p99,
    maxMs: result.latency.max,
    firstErrors,
  };
}

async function setFaults(api: string, faults: Record<string, unknown>): Promise<void> {
  await expectStatus(200, 'PUT', `${api}/sandbox/binance-pay/faults`, { body: faults });
}

/** Waits until every refund whose key starts with prefix is final; returns the database's figures. */
async function settle(db: pg.Pool, prefix: string, expected: number, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  let final = 0;
  while (Date.now() < deadline) {
    const { rows } = await db.query(
      `SELECT count(*) FILTER (WHERE completed_at IS NOT NULL)::int AS final FROM refunds WHERE merchant_id = $1 AND idempotency_key LIKE $2`,
      [MERCHANT, `${prefix}-%`],
    );
    final = rows[0].final;
    if (final >= expected) break;
    await sleep(500);
  }
  const { rows } = await db.query(
    `SELECT count(*)::int AS n,
            count(*) FILTER (WHERE status = 'succeeded')::int AS succeeded,
            count(*) FILTER (WHERE completed_at IS NOT NULL)::int AS final,
            extract(epoch FROM max(completed_at) - min(created_at))::float AS span_s,
            (percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - created_at)) * 1000)::float AS p50_ms,
            (percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - created_at)) * 1000)::float AS p99_ms,
            (max(extract(epoch FROM completed_at - created_at)) * 1000)::float AS max_ms,
            avg(attempt_count)::float AS attempts
       FROM refunds WHERE merchant_id = $1 AND idempotency_key LIKE $2`,
    [MERCHANT, `${prefix}-%`],
  );
  const r = rows[0];
  return {
    refunds: r.n as number,
    final: r.final as number,
    succeeded: r.succeeded as number,
    seconds: round(r.span_s ?? NaN, 2),
    perSecond: Math.round((r.final as number) / (r.span_s as number)),
    timeToFinalP50Ms: Math.round(r.p50_ms),
    timeToFinalP99Ms: Math.round(r.p99_ms),
    timeToFinalMaxMs: Math.round(r.max_ms),
    providerCallsPerRefund: round(r.attempts, 2),
    timedOut: final < expected,
  };
}

/**
 * Waits until the Binance Pay emulator has no webhook left to send (bounded by timeoutMs), so
 * a phase is charged with the webhooks of its own refunds and not the next phase. Returns the
 * webhooks still pending when the refunds were all final, and when the last one of the
 * refunds of `prefix` was delivered (seconds after the first of them was created).
 */
async function drainWebhooks(db: pg.Pool, prefix: string, timeoutMs: number) {
  // Only this phase's webhooks: a straggler of another phase must not keep the meters running.
  // Their request ids are read once; each poll then looks only at the pending rows (a partial
  // index), not at the refunds table, since its CPU counts as the service's.
  const ids = (
    await db.query(`SELECT provider_request_id AS id FROM refunds WHERE merchant_id = $1 AND idempotency_key LIKE $2`, [
      MERCHANT,
      `${prefix}-%`,
    ])
  ).rows.map((r) => r.id as string);
  const pendingNow = async () =>
    (
      await db.query(
        `SELECT count(*)::int AS n FROM sandbox.binance_webhooks
          WHERE status = 'PENDING' AND next_attempt_at > '-infinity' AND refund_request_id = ANY($1::text[])`,
        [ids],
      )
    ).rows[0].n as number;
  const pendingAtFinal = await pendingNow();
  const deadline = Date.now() + timeoutMs;
  let pending = pendingAtFinal;
  while (pending > 0 && Date.now() < deadline) {
    await sleep(200);
    pending = await pendingNow();
  }
  const { rows } = await db.query(
    `SELECT count(*) FILTER (WHERE w.status = 'DELIVERED')::int AS delivered,
            extract(epoch FROM max(w.delivered_at) - (SELECT min(created_at) FROM refunds WHERE merchant_id = $1 AND idempotency_key LIKE $2))::float AS span_s
       FROM sandbox.binance_webhooks w JOIN refunds r ON r.provider_request_id = w.refund_request_id
      WHERE r.merchant_id = $1 AND r.idempotency_key LIKE $2`,
    [MERCHANT, `${prefix}-%`],
  );
  // Which answer made each refund final (the provider's webhook or the worker's call), and how
  // long the emulator's webhooks took from settlement to delivery: where the webhooks lag,
  // the worker polls for what they would have said (finding 52).
  const paths = await db.query(
    `SELECT count(*) FILTER (WHERE e.actor LIKE 'webhook:%')::int AS by_webhook,
            count(*) FILTER (WHERE e.actor = 'worker')::int AS by_worker
       FROM refunds r JOIN refund_events e ON e.refund_id = r.id AND e.to_status = r.status AND e.from_status = 'processing'
      WHERE r.merchant_id = $1 AND r.idempotency_key LIKE $2`,
    [MERCHANT, `${prefix}-%`],
  );
  // Deliveries that took more than one attempt: a receiver that refused or a connection that
  // failed makes a webhook wait for the emulator's retry, while the worker polls for its refund.
  const lag = await db.query(
    `SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
            count(*) FILTER (WHERE attempts > 1)::int AS retried
       FROM (SELECT extract(epoch FROM w.delivered_at - w.created_at) * 1000 AS ms, w.attempts
               FROM sandbox.binance_webhooks w WHERE w.status = 'DELIVERED' AND w.refund_request_id = ANY($1::text[])) d`,
    [ids],
  );
  const settle = await db.query(
    `SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
       FROM (SELECT extract(epoch FROM r.settled_at - r.created_at) * 1000 AS ms
               FROM sandbox.binance_refunds r WHERE r.settled_at IS NOT NULL AND r.refund_request_id = ANY($1::text[])) d`,
    [ids],
  );

  return {
    pendingAtFinal,
    stillPending: pending,
    delivered: rows[0].delivered as number,
    lastDeliveredS: round(rows[0].span_s ?? NaN, 2),
    finalBy: { webhook: paths.rows[0].by_webhook as number, worker: paths.rows[0].by_worker as number },
    deliveryLagMs: { p50: Math.round(lag.rows[0].p50 ?? NaN), p99: Math.round(lag.rows[0].p99 ?? NaN) },
    retriedDeliveries: lag.rows[0].retried as number,
    // From the emulator's refund to its settlement (settleAfterMs is 0 here): how far its loop lags.
    settleLagMs: { p50: Math.round(settle.rows[0].p50 ?? NaN), p99: Math.round(settle.rows[0].p99 ?? NaN) },
  };
}

// ------------------------------------------------------------------------------ profiling

class Profiler {
  constructor(
    readonly dir: string | undefined,
    private readonly procs: () => ServiceProcess[],
  ) {}
  async start(label: string): Promise<void> {
    if (!this.dir) return;
    fs.writeFileSync(path.join(this.dir, 'label'), label);
    for (const p of this.procs()) if (p.pid) process.kill(p.pid, 'SIGWINCH');
  }
  async stop(label: string): Promise<void> {
    if (!this.dir) return;
    const procs = this.procs().filter((p) => p.pid);
    for (const p of procs) process.kill(p.pid!, 'SIGWINCH');
    await pollUntil(async () => procs.every((p) => fs.existsSync(path.join(this.dir!, `${p.name}-${label}.done`))), 20_000, 100);
  }
}

// ---------------------------------------------------------------------------------- main

async function main(): Promise<number> {
  const startedAt = new Date();
  const swept = sweepLeftovers(pgCtlSync);
  if (swept.length) log(`cleaned up ${swept.length} leftover run(s)`);
  const run = makeRunDir('bench');
  runDir = run.dir;
  // The service runs from a copy of this build: `nest build` (deleteOutDir) elsewhere would
  // otherwise delete dist/bench under a running benchmark.
  const serviceDir = path.join(run.dir, 'service');
  const serviceBuild = env.BENCH_SERVICE_BUILD ? path.resolve(env.BENCH_SERVICE_BUILD) : BUILT;
  for (const sub of ['src', 'migrations']) fs.cpSync(path.join(serviceBuild, sub), path.join(serviceDir, sub), { recursive: true });
  fs.writeFileSync(path.join(serviceDir, 'package.json'), '{ "type": "module" }\n');
  const modules = env.BENCH_SERVICE_NODE_MODULES ? path.resolve(env.BENCH_SERVICE_NODE_MODULES) : path.join(REPO_ROOT, 'node_modules');
  fs.symlinkSync(modules, path.join(run.dir, 'node_modules'));
  process.env.CHAOS_SERVICE_ENTRY = path.join(serviceDir, 'src', 'main.js');
  log(`run dir ${run.dir} (logs of every process)`);
  const loadAtStart = loadAvg();

  // Postgres: the chaos cluster (fsync off, 400 connections) with pg_stat_statements.
  const cluster = await PgCluster.create(run.dir);
  fs.appendFileSync(
    path.join(cluster.dataDir, 'postgresql.conf'),
    `\nshared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = top\n`,
  );
  await cluster.start();
  let databaseUrl = await cluster.createDatabase(`refunds_bench_${randomBytes(3).toString('hex')}`);
  if (PG_SOCKET) {
    // The cluster's Unix socket (its directory is the cluster's root) instead of TCP
    // 127.0.0.1, for baseline A, the service and the emulators alike: what a deployment with
    // Postgres on the same host would use (pg reads the directory from ?host=).
    const u = new URL(databaseUrl);
    u.hostname = 'localhost';
    u.searchParams.set('host', cluster.root);
    databaseUrl = u.toString();
  }
  const redis = await RedisServer.create(run.dir);
  await redis.start();
  const redisPid = () => (redis as unknown as { child?: { pid?: number } }).child?.pid;
  const db = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  onCleanup('bench pool', () => db.end().catch(() => undefined), () => undefined);
  let pgss = true;
  try {
    await db.query(`CREATE EXTENSION IF NOT EXISTS pg_stat_statements`);
  } catch (err) {
    pgss = false;
    log(`pg_stat_statements unavailable: ${(err as Error).message}`);
  }

  const apiPort = await freePort();
  const emulatorPort = EMULATOR_PROCESS ? await freePort() : apiPort;
  let emulatorDatabaseUrl = databaseUrl;
  if (EMULATOR_PROCESS) {
    // Superuser like the service's own role: it creates the emulators' schema.
    await db.query(`CREATE ROLE ${EMULATOR_DB_USER} LOGIN SUPERUSER`);
    const u = new URL(databaseUrl);
    u.username = EMULATOR_DB_USER;
    u.password = '';
    emulatorDatabaseUrl = u.toString();
  }
  const queuePrefix = `bench_${randomBytes(3).toString('hex')}`;
  const adminKey = `bench_admin_${randomBytes(16).toString('hex')}`;
  const profileDir = PROFILING ? path.join(REPO_ROOT, 'bench', 'results', `profiles-${startedAt.toISOString().replace(/[:.]/g, '-')}`) : undefined;
  if (profileDir) fs.mkdirSync(profileDir, { recursive: true });
  const extraEnv: Record<string, string> = {};
  for (const pair of (env.BENCH_SERVICE_ENV ?? '').split(/\s+/).filter(Boolean)) {
    const i = pair.indexOf('=');
    if (i > 0) extraEnv[pair.slice(0, i)] = pair.slice(i + 1);
  }
  const serviceEnv = (name: string): Record<string, string> => ({
    NODE_ENV: 'production',
    SANDBOX: 'true',
    LOG_LEVEL: 'info',
    DATABASE_URL: databaseUrl,
    REDIS_URL: redis.url,
    QUEUE_PREFIX: queuePrefix,
    ADMIN_API_KEY: adminKey,
    SANDBOX_URL: `http://127.0.0.1:${emulatorPort}/sandbox`,
    // With an emulator process, the service's processes only use the emulators.
    ...(EMULATOR_PROCESS ? { SANDBOX_SERVE: name === 'emulator' ? 'true' : 'false' } : {}),
    ...(name === 'emulator' ? { DATABASE_URL: emulatorDatabaseUrl } : {}),
    PUBLIC_URL: `http://127.0.0.1:${apiPort}`,
    // The limiter's Redis call stays in the path; its budget does not limit the benchmark.
    RATE_LIMIT_PER_MINUTE: '1000000',
    BENCH_PROCESS_NAME: name,
    // The heap cap the Dockerfile and `npm start` run the service with (docs/performance.md, memory).
    NODE_OPTIONS: [...SERVICE_NODE_OPTIONS, ...(profileDir ? [`--require ${path.join(REPO_ROOT, 'bench', 'cpu-profile.cjs')}`] : [])].join(' '),
    ...(profileDir ? { BENCH_CPU_PROF_DIR: profileDir, BENCH_PROF_KIND: HEAP_PROF ? 'heap' : 'cpu' } : {}),
    ...extraEnv,
  });
  const api = await serviceProcess('api', 'api', run.dir, { env: serviceEnv('api'), adminKey, queuePrefix }, apiPort);
  // More API processes (BENCH_API_PROCESSES), e.g. one per core as a deployment would run them.
  const moreApis = [];
  for (let i = 2; i <= API_PROCESSES; i++) {
    moreApis.push(await serviceProcess(`api${i}`, 'api', run.dir, { env: serviceEnv(`api${i}`), adminKey, queuePrefix }, await freePort()));
  }
  const apis = [api, ...moreApis];
  const apiUrls = () => apis.map((p) => p.url);
  const worker = await serviceProcess('worker', 'worker', run.dir, { env: serviceEnv('worker'), adminKey, queuePrefix });
  const emulator = EMULATOR_PROCESS
    ? await serviceProcess('emulator', 'api', run.dir, { env: serviceEnv('emulator'), adminKey, queuePrefix }, emulatorPort)
    : undefined;
  /** Where the sandbox's own endpoints (payments, faults) are served. */
  const sandboxBase = () => (emulator ?? api).url;
  await ensureCwd();
  await api.start();
  await emulator?.start();
  // One at a time: the first runs the migrations.
  for (const p of moreApis) await p.start();
  const merchantKey = await createMerchantKey(api.url, adminKey, MERCHANT);
  const memory: Record<string, unknown> = { apiIdle: await heapMb(api.url) };
  // Binance checks request timestamps within 1 s of its clock; a loaded 2-core machine can lag more.
  await setFaults(sandboxBase(), { timestampWindowMs: 10_000 });
  const services = () => [...apis, worker, ...(emulator ? [emulator] : [])].filter((p) => p.isRunning);
  const rss = new RssSampler(() => [
    ...services().map((p) => ({ name: p.name, pid: p.pid })),
  ]);
  const profiler = new Profiler(profileDir, services);
  const postmasterPid = Number(fs.readFileSync(path.join(cluster.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const cpu = new CpuMeter(() => ({
    api: apis.reduce((sum, p) => sum + (p.pid && p.isRunning ? cpuMs(p.pid) : 0), 0),
    worker: worker.pid && worker.isRunning ? cpuMs(worker.pid) : 0,
    ...((): Record<string, number> => {
      const pgCpu = postgresCpuMs(postmasterPid);
      return EMULATOR_PROCESS ? { postgres: pgCpu.total - pgCpu.emulator, postgresEmulator: pgCpu.emulator } : { postgres: pgCpu.total };
    })(),
    ...(emulator ? { emulator: emulator.pid && emulator.isRunning ? cpuMs(emulator.pid) : 0 } : {}),
    redis: redisPid() ? cpuMs(redisPid()!) : 0,
    bench: (() => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    })(),
  }));
  const perUnit = (ms: Record<string, number>, n: number) =>
    Object.fromEntries(Object.entries(ms).map(([k, v]) => [k, round(v / n, 2)]));
  /**
   * GC ms so far per service process (the API processes summed), to subtract per phase; and
   * the first API process's runtime figures (its loop delay since the previous scrape of its
   * /metrics: no other scrape of it falls inside the ingest).
   */
  let lastApiRuntime: RuntimeStats | undefined;
  const gcSnapshot = async (): Promise<Record<string, number>> => {
    const out: Record<string, number> = {};
    const ms = (r: RuntimeStats | undefined) => r?.gcMs ?? NaN;
    const apiStats = await Promise.all(apis.filter((p) => p.isRunning).map((p) => runtimeStats(p.url)));
    lastApiRuntime = apiStats[0];
    out.api = apiStats.reduce((x, r) => x + ms(r), 0);
    if (worker.isRunning) out.worker = ms(await runtimeStats(worker.url));
    if (emulator?.isRunning) out.emulator = ms(await runtimeStats(emulator.url));
    return out;
  };
  /**
   * A phase's GC time per unit of work, and its share of the same process's CPU in the phase:
   * what a change to allocation or to the young generation's size (--max-semi-space-size)
   * would act on.
   */
  const gcPer = (before: Record<string, number>, after: Record<string, number>, cpuUsed: Record<string, number>, n: number) =>
    Object.fromEntries(
      Object.keys(after)
        .filter((k) => before[k] !== undefined && Number.isFinite(after[k]! - before[k]!))
        .map((k) => {
          const ms = after[k]! - before[k]!;
          return [k, { msPerUnit: round(ms / n, 2), shareOfCpu: cpuUsed[k] ? round(ms / cpuUsed[k]!, 3) : null }];
        }),
    );
  const phases: Record<string, unknown> = {};
  const rssPeaks: Record<string, number> = {};
  const notePeaks = (peaks: Record<string, number>) => {
    for (const [k, v] of Object.entries(peaks)) rssPeaks[k] = Math.max(rssPeaks[k] ?? 0, v);
    return peaks;
  };

  log(`baseline A: refund-creation transaction through pg, ${CONCURRENCY} connections, ${BASELINE_SECONDS} s`);
  const a = await baselineA(databaseUrl, cpu);
  phases.baselineA = { ...a, cpuMsPerTransaction: a.cpuMs ? perUnit(a.cpuMs, a.transactions) : undefined, loadAverage: loadAvg() };
  log(`  ${a.perSecond} tx/s, p50 ${a.p50Ms} ms, p99 ${a.p99Ms} ms`);

  log(`baseline B: BullMQ no-op jobs, ${BULLMQ_JOBS} added and processed, concurrency ${CONCURRENCY}`);
  const b = await baselineB(redis.url, `${queuePrefix}_noop`);
  phases.baselineB = { ...b, loadAverage: loadAvg() };
  log(`  ${b.perSecond} jobs/s`);

  // ---- ingest (API alone) --------------------------------------------------------------
  const ingestPayments = await createPayments(sandboxBase(), Math.ceil(INGEST_REQUESTS / PER_PAYMENT));
  log(`ingest: warm-up, one refund on each of ${ingestPayments.length} payments (first reference looks the payment up)`);
  const warm = await post(apiUrls(), merchantKey, plan('warm', ingestPayments, 1));
  if (warm.errors) throw new Error(`ingest warm-up: ${warm.errors} errors: ${warm.firstErrors.join(' | ')}`);
  const ingestPosts = plan('ing', ingestPayments, PER_PAYMENT).slice(0, INGEST_REQUESTS);
  log(`ingest: ${ingestPosts.length} POST /v1/refunds at ${CONCURRENCY} connections`);
  await resetStatements(db, pgss);
  await profiler.start('ingest');
  const ingestGc0 = await gcSnapshot();
  const ingestRuntime0 = lastApiRuntime;
  rss.start();
  cpu.start();
  const ingest = await post(apiUrls(), merchantKey, ingestPosts);
  const ingestCpu = cpu.stop();
  const ingestGc = gcPer(ingestGc0, await gcSnapshot(), ingestCpu, ingest.ok || 1);
  // What the requests' latency tail may wait on in the API process: its event loop's delay
  // over the phase, and its GC pauses that were long (over 10 and 100 ms).
  const ingestRuntime =
    ingestRuntime0 && lastApiRuntime
      ? {
          loopDelay: lastApiRuntime.loopDelay,
          gcPausesOver10Ms: lastApiRuntime.gcPausesOver10Ms - ingestRuntime0.gcPausesOver10Ms,
          gcPausesOver100Ms: lastApiRuntime.gcPausesOver100Ms - ingestRuntime0.gcPausesOver100Ms,
          createStages: stagesBetween(ingestRuntime0.createStages, lastApiRuntime.createStages),
        }
      : undefined;
  const ingestRss = notePeaks(rss.stop());
  memory.apiAfterIngest = await heapMb(api.url);
  await profiler.stop('ingest');
  const ingestCalls = await totalCalls(db, pgss);
  phases.ingest = {
    ...ingest,
    sqlStatementsPerRequest: round(ingestCalls / ingestPosts.length, 2),
    cpuMs: ingestCpu,
    cpuMsPerRequest: perUnit(ingestCpu, ingest.ok || 1),
    gcPerRequest: ingestGc,
    apiRuntime: ingestRuntime,
    rssPeakMb: ingestRss,
    loadAverage: loadAvg(),
    topStatements: await statements(db, pgss),
  };
  log(`  ${ingest.perSecond} accepted/s, p50 ${ingest.p50Ms} ms, p99 ${ingest.p99Ms} ms, errors ${ingest.errors}`);

  // The machine's speed drifts by tens of percent within minutes (a shared VM), so baseline A
  // is measured again right after the ingest and after the end-to-end runs, and the ratios
  // use the mean of those runs rather than one sample taken minutes earlier.
  log(`baseline A again, after the ingest`);
  const aRuns = [a, await baselineA(databaseUrl, cpu, true)];
  log(`  ${aRuns[1]!.perSecond} tx/s`);

  // ---- the ingest at fixed rates, open loop --------------------------------------------
  // The closed loop above answers "how many at most": its latency is 64 connections ÷ the
  // rate (Little's law). Merchants send open loop, so this asks what a create's latency is at
  // a given share of that rate (finding 64). The worker is still stopped.
  const ingestAtRates: Array<Record<string, unknown>> = [];
  // Skipped when the ingest had no rate to take shares of.
  for (const fraction of Number.isFinite(ingest.perSecond) && ingest.perSecond > 0 ? INGEST_RATES : []) {
    const rate = Math.max(1, Math.round(fraction * ingest.perSecond));
    // At least 500 requests for the tail's sake, unless that would take over three times the step's time.
    const n = Math.round(Math.max(rate * INGEST_RATE_SECONDS, Math.min(500, rate * 3 * INGEST_RATE_SECONDS)));
    const payments = await createPayments(sandboxBase(), Math.ceil(n / PER_PAYMENT));
    const warmRate = await post(apiUrls(), merchantKey, plan(`wr${fraction}`, payments, 1));
    if (warmRate.errors) throw new Error(`rate warm-up: ${warmRate.errors} errors: ${warmRate.firstErrors.join(' | ')}`);
    log(`ingest at ${rate}/s (${fraction} of the closed loop's rate), open loop: ${n} POST /v1/refunds`);
    await profiler.start(`rate${fraction}`);
    const before = await runtimeStats(api.url);
    cpu.start();
    const deadlineMs = (1000 * n) / rate + 30_000;
    const r = await postAtRate(apiUrls(), merchantKey, plan(`rate${fraction}`, payments, PER_PAYMENT).slice(0, n), rate, deadlineMs);
    const used = cpu.stop();
    await profiler.stop(`rate${fraction}`);
    const after = await runtimeStats(api.url);
    const createStages = before && after ? stagesBetween(before.createStages, after.createStages) : undefined;
    const cpuMsPerRequest = perUnit(used, r.ok || 1);
    // The API processes' busy share of one core while the step ran (summed over them when
    // there are several): how far from saturation the rate is.
    const apiCoreShare = round((used.api ?? 0) / (1000 * r.seconds), 2);
    ingestAtRates.push({ fraction, targetPerSecond: rate, ...r, cpuMsPerRequest, apiCoreShare, firstApiCreateStages: createStages });
    log(`  ${r.perSecond} accepted/s, p50 ${r.p50Ms} ms, p90 ${r.p90Ms} ms, p99 ${r.p99Ms} ms, errors ${r.errors}; API ${cpuMsPerRequest.api} ms CPU per create, ${apiCoreShare} of a core`);
  }
  phases.ingestAtRate = ingestAtRates;

  // The ingested refunds are not part of the end-to-end runs: end them here, and their jobs.
  await db.query(
    `UPDATE refunds SET status = 'canceled', completed_at = now(), next_check_at = NULL, status_changed_at = now(), updated_at = now()
      WHERE merchant_id = $1 AND status = 'queued'`,
    [MERCHANT],
  );
  await db.query(`DELETE FROM refund_event_outbox`);
  {
    const u = new URL(redis.url);
    const q = new Queue('refunds-binance_pay', { prefix: queuePrefix, connection: { host: u.hostname, port: Number(u.port) } });
    await q.obliterate({ force: true });
    await q.close();
  }
  await db.query(`VACUUM ANALYZE`);

  // ---- end to end ----------------------------------------------------------------------
  await ensureCwd();
  await worker.start();
  memory.workerIdle = await heapMb(worker.url);
  const e2e: Record<string, unknown> = {};
  // Jobs the worker holds at once (BullMQ's active list): each holds one of its
  // WORKER_CONCURRENCY slots, and with slow providers nearly all of them wait on a provider.
  const activeQueue = (() => {
    const u = new URL(redis.url);
    return new Queue('refunds-binance_pay', { prefix: queuePrefix, connection: { host: u.hostname, port: Number(u.port) } });
  })();
  onCleanup('bench active-jobs queue', () => activeQueue.close(), () => undefined);
  const redisStats = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  onCleanup('bench redis stats client', () => redisStats.quit().then(() => undefined), () => undefined);
  for (const latency of E2E_LATENCIES) {
    const label = `e2e${latency}`;
    const payments = await createPayments(sandboxBase(), Math.ceil(E2E_REFUNDS / PER_PAYMENT));
    await setFaults(sandboxBase(), { latencyMs: 0, settleAfterMs: 0, timestampWindowMs: 10_000 });
    log(`end to end, ${latency} ms: warm-up, one refund on each of ${payments.length} payments`);
    const w = await post(apiUrls(), merchantKey, plan(`w${label}`, payments, 1));
    if (w.errors) throw new Error(`${label} warm-up: ${w.errors} errors: ${w.firstErrors.join(' | ')}`);
    await settle(db, `w${label}`, payments.length, E2E_TIMEOUT_MS);
    await drainWebhooks(db, `w${label}`, E2E_TIMEOUT_MS);
    await setFaults(sandboxBase(), { latencyMs: latency });
    const posts = plan(label, payments, PER_PAYMENT).slice(0, E2E_REFUNDS);
    log(`end to end, ${latency} ms: ${posts.length} refunds posted at ${CONCURRENCY} connections, waiting until final`);
    await resetStatements(db, pgss);
    await sleep(1_100); // the warm-up's row counters reach the shared statistics
    // After the wait: the warm-up refunds' first polls (due 0.5-1 s after their creates) are
    // mostly over by now, and a build that keeps those jobs would count them here otherwise.
    await redisStats.config('RESETSTAT');
    const overflows0 = listenOverflows();
    const writes0 = await rowWrites(db);
    await profiler.start(label);
    const gc0 = await gcSnapshot();
    rss.start();
    cpu.start();
    const active: number[] = [];
    // The largest accept queue seen at the API's and the emulator's ports (finding 57).
    const queuePeaks = { api: 0, emulator: 0 };
    let queuesKnown = false;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        active.push(await activeQueue.getActiveCount().catch(() => NaN));
        const queues = acceptQueues([apiPort, emulatorPort]);
        // Known only once the API's listening socket was found (IPv4: the service listens on 0.0.0.0).
        if (queues?.has(apiPort)) {
          queuesKnown = true;
          queuePeaks.api = Math.max(queuePeaks.api, queues.get(apiPort)!);
          if (EMULATOR_PROCESS) queuePeaks.emulator = Math.max(queuePeaks.emulator, queues.get(emulatorPort) ?? 0);
        }
        await sleep(250);
      }
    })();
    const ingestDuring = await post(apiUrls(), merchantKey, posts);
    const result = await settle(db, label, posts.length, E2E_TIMEOUT_MS);
    // The phase's work includes the provider's webhooks about its refunds (and our handling
    // of them): the CPU is measured until they are delivered too.
    sampling = false;
    await sampler;
    const activeOk = active.filter(Number.isFinite);
    const webhooks = await drainWebhooks(db, label, E2E_TIMEOUT_MS);
    // Webhooks still owed at the deadline: the rate below would be too high, say so.
    if (webhooks.stillPending > 0) result.timedOut = true;
    const used = cpu.stop();
    const overflows1 = listenOverflows();
    const gc = gcPer(gc0, await gcSnapshot(), used, result.final || 1);
    memory[`apiAfter${label}`] = await heapMb(api.url);
    memory[`workerAfter${label}`] = await heapMb(worker.url);
    const peaks = notePeaks(rss.stop());
    await profiler.stop(label);
    const calls = await totalCalls(db, pgss);
    const emuCalls = await emulatorCalls(db, pgss);
    const redisCalls = await redisCommands(redisStats);
    await sleep(1_100);
    const writes = rowWritesPer(writes0, await rowWrites(db), posts.length);
    e2e[String(latency)] = {
      latencyMs: latency,
      ...result,
      // Refunds per second until the last of them is final AND the provider's webhook about it
      // delivered: the rate the whole flow sustains (a webhook backlog that only grows is not
      // sustainable). Rounds 1 to 4 reported perSecondUntilFinal, while webhooks queued.
      perSecond: Math.round(result.final / Math.max(result.seconds, webhooks.lastDeliveredS || 0)),
      perSecondUntilFinal: result.perSecond,
      // Sampled every 250 ms from the first post until all were final.
      activeJobs: {
        peak: activeOk.length ? Math.max(...activeOk) : NaN,
        mean: activeOk.length ? Math.round(activeOk.reduce((x, y) => x + y, 0) / activeOk.length) : NaN,
      },
      webhooks,
      posts: { perSecond: ingestDuring.perSecond, p99Ms: ingestDuring.p99Ms, errors: ingestDuring.errors, statusCodes: ingestDuring.statusCodes },
      sqlStatementsPerRefund: round(calls / posts.length, 1),
      // The provider's own (the emulator process's role); the rest are the service's.
      ...(EMULATOR_PROCESS ? { sqlStatementsPerRefundEmulator: round(emuCalls / posts.length, 1) } : {}),
      rowWritesPerRefund: writes,
      // Connections refused by a full accept queue during the phase (finding 56).
      listenOverflows: overflows0 === undefined || overflows1 === undefined ? undefined : overflows1 - overflows0,
      // Sampled every 250 ms with the active jobs: connections established but not yet accepted.
      acceptQueuePeak: queuesKnown ? (EMULATOR_PROCESS ? queuePeaks : { api: queuePeaks.api }) : undefined,
      redisCommandsPerRefund: {
        total: round(redisCalls.total / posts.length, 1),
        scripts: round(redisCalls.scripts / posts.length, 2),
        // The five most called, per refund.
        top: Object.fromEntries(
          Object.entries(redisCalls.byCommand)
            .sort((a, b) => b[1] - a[1])
            .slice(0, 5)
            .map(([name, n]) => [name, round(n / posts.length, 2)]),
        ),
      },
      cpuMs: used,
      cpuMsPerRefund: perUnit(used, result.final || 1),
      gcPerRefund: gc,
      rssPeakMb: peaks,
      loadAverage: loadAvg(),
      topStatements: await statements(db, pgss),
    };
    log(
      `  ${result.perSecond} refunds/s until final (${result.final}/${result.refunds} final, ${result.succeeded} succeeded), time to final p50 ${result.timeToFinalP50Ms} ms p99 ${result.timeToFinalP99Ms} ms; ${webhooks.pendingAtFinal} webhooks still to send then, the last delivered at ${webhooks.lastDeliveredS} s; made final by webhook ${webhooks.finalBy.webhook}, by worker ${webhooks.finalBy.worker}; webhook settled→delivered p50 ${webhooks.deliveryLagMs.p50} ms p99 ${webhooks.deliveryLagMs.p99} ms; emulator refund→settled p50 ${webhooks.settleLagMs.p50} ms p99 ${webhooks.settleLagMs.p99} ms`,
    );
  }
  phases.endToEnd = e2e;
  if (E2E_LATENCIES.length) {
    log(`baseline A again, after the end-to-end runs`);
    aRuns.push(await baselineA(databaseUrl, cpu, true));
    log(`  ${aRuns[aRuns.length - 1]!.perSecond} tx/s`);
  }
  const aRate = Math.round(aRuns.reduce((sum, r) => sum + r.perSecond, 0) / aRuns.length);
  // The CPU of one bare create transaction (its Postgres backend and its pg client), mean of
  // the runs: the unit the CPU per refund is also given in (cpuPerRefundInBaselineTx below).
  const aTxCpu = aRuns.map((r) => (r.cpuMs ? (r.cpuMs.postgres + r.cpuMs.bench) / r.transactions : NaN)).filter(Number.isFinite);
  const aTxCpuMs = aTxCpu.length ? round(aTxCpu.reduce((x, y) => x + y, 0) / aTxCpu.length, 3) : NaN;
  phases.baselineA = {
    ...(phases.baselineA as object),
    runsPerSecond: aRuns.map((r) => r.perSecond),
    meanPerSecond: aRate,
    cpuMsPerTransactionMean: aTxCpuMs,
  };
  /**
   * CPU per refund (the service's and the emulator's processes and Postgres backends, not the
   * load generator) in bare create transactions' worth. The VM's speed drifts by tens of per
   * cent within an hour and both figures move with it, so their quotient compares runs taken
   * at different speeds. When the machine's cores are saturated in both phases, end to end ÷
   * baseline A is roughly its inverse: 0.25 needs a refund to cost at most ~4 transactions.
   */
  for (const x of Object.values(e2e) as Array<{ cpuMsPerRefund: Record<string, number>; cpuPerRefundInBaselineTx?: unknown }>) {
    const c = x.cpuMsPerRefund;
    const service = serviceCpuMs(c);
    const provider = (c.emulator ?? 0) + (c.postgresEmulator ?? 0);
    x.cpuPerRefundInBaselineTx = {
      all: round((service + provider) / aTxCpuMs, 1),
      // With the emulators inside the API process (BENCH_EMULATOR_PROCESS=0) there is no service share apart.
      service: c.emulator === undefined ? null : round(service / aTxCpuMs, 1),
    };
  }

  const hwm: Record<string, number> = {};
  for (const p of services()) hwm[p.name] = round(procKb(p.pid!, 'VmHWM') / 1024);
  const e0 = e2e['0'] as { perSecond: number } | undefined;
  const e200 = e2e['200'] as { perSecond: number } | undefined;
  const ratios = {
    ingestToBaselineA: round(ingest.perSecond / aRate, 3),
    endToEnd0msToBaselineA: e0 ? round(e0.perSecond / aRate, 3) : null,
    endToEnd200msToBaselineA: e200 ? round(e200.perSecond / aRate, 3) : null,
    ingestToBaselineB: round(ingest.perSecond / b.perSecond, 3),
  };
  const peakRss = Math.max(...Object.values(rssPeaks), ...Object.values(hwm));
  const met = {
    ingest: ratios.ingestToBaselineA >= TARGETS.ingestRatio && ingest.p99Ms <= TARGETS.ingestP99Ms && ingest.errors === 0,
    endToEnd0ms: e0 ? (ratios.endToEnd0msToBaselineA ?? 0) >= TARGETS.e2eRatio : null,
    endToEnd200ms: e200 ? e200.perSecond >= TARGETS.e2eSlowPerSecond : null,
    rss: peakRss <= TARGETS.rssMb,
  };
  const result = {
    at: startedAt.toISOString(),
    label: env.BENCH_LABEL ?? null,
    durationSeconds: round((Date.now() - startedAt.getTime()) / 1000),
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memoryGb: round(os.totalmem() / 2 ** 30), node: process.version },
    loadAverage: { atStart: loadAtStart, atEnd: loadAvg() },
    settings: {
      concurrency: CONCURRENCY,
      apiProcesses: API_PROCESSES,
      baselineSeconds: BASELINE_SECONDS,
      bullmqJobs: BULLMQ_JOBS,
      ingestRequests: INGEST_REQUESTS,
      ingestRates: INGEST_RATES,
      ingestRateSeconds: INGEST_RATE_SECONDS,
      e2eRefunds: E2E_REFUNDS,
      e2eLatencies: E2E_LATENCIES,
      serviceEnv: extraEnv,
      nodeOptions: SERVICE_NODE_OPTIONS.join(' '),
      serviceBuild: env.BENCH_SERVICE_BUILD ?? 'dist/bench',
      postgres: 'own cluster (fsync off, full_page_writes off, shared_buffers 64MB, max_connections 400)',
      postgresConnection: PG_SOCKET ? 'unix socket' : 'tcp 127.0.0.1',
    },
    phases,
    ratios,
    rss: { peakSampledMb: rssPeaks, vmHwmMb: hwm, heapFromMetricsMb: memory },
    targets: TARGETS,
    met,
    profiles: profileDir ? path.relative(REPO_ROOT, profileDir) : null,
    profileKind: profileDir ? (HEAP_PROF ? 'heap' : 'cpu') : null,
  };

  const cpuLine = (c: Record<string, number>, worker = false) =>
    (worker ? [c.api, c.worker, c.postgres, c.redis] : [c.api, c.postgres, c.redis, c.bench]).map((v) => (v ?? 0).toFixed(1)).join(' / ');
  /**
   * The end-to-end CPU per refund. With the emulator in its own process, the service's share
   * (api, worker, its Postgres backends, Redis) and the provider's are shown apart, with the
   * rate the service's own CPU would allow on this machine's cores if the providers ran
   * elsewhere: a derived figure, not a measurement.
   */
  const cpuRows = (x: { cpuMsPerRefund: Record<string, number>; sqlStatementsPerRefund: number; sqlStatementsPerRefundEmulator?: number }) => {
    const c = x.cpuMsPerRefund;
    if (c.emulator === undefined) return [row('  CPU ms per refund: api+emulator / worker / postgres / redis', cpuLine(c, true), '', '')];
    const service = serviceCpuMs(c);
    return [
      row('  service CPU ms per refund: api / worker / postgres / redis', cpuLine(c, true), '', ''),
      row('  provider (emulator) CPU ms per refund: process / postgres', `${(c.emulator ?? 0).toFixed(1)} / ${(c.postgresEmulator ?? 0).toFixed(1)}`, '', ''),
      row('  SQL statements per refund: service / provider', `${round(x.sqlStatementsPerRefund - (x.sqlStatementsPerRefundEmulator ?? 0), 1)} / ${x.sqlStatementsPerRefundEmulator}`, '', ''),
      row(`  service CPU per refund; ${os.cpus().length} cores ÷ it (derived), refunds/s`, `${service.toFixed(1)} ms; ${Math.round((os.cpus().length * 1000) / service)}`, '', ''),
    ];
  };
  /** GC ms per unit and its share of the process's CPU, e.g. "0.10 (10 %)", per process. */
  const gcLine = (g: Record<string, { msPerUnit: number; shareOfCpu: number | null }> | undefined, names: string[]) =>
    names.map((n) => (g?.[n] ? `${g[n]!.msPerUnit.toFixed(2)} (${g[n]!.shareOfCpu === null ? '?' : Math.round(g[n]!.shareOfCpu! * 100)} %)` : '-')).join(' / ');
  const row = (a1: string, b1: string, c1: string, d1: string) => `${a1.padEnd(58)} ${b1.padStart(16)} ${c1.padStart(16)} ${d1.padStart(5)}`;
  const yes = (x: boolean | null) => (x === null ? '' : x ? 'yes' : 'NO');
  const lines = [
    '',
    `refund throughput, ${os.cpus().length} cores, ${API_PROCESSES} api process${API_PROCESSES > 1 ? "es" : ""}${PG_SOCKET ? ", Postgres over its Unix socket" : ""}, load average ${loadAtStart.join(' ')} at start, ${result.loadAverage.atEnd.join(' ')} at end`,
    row('measure', 'value', 'target', 'met'),
    row('-'.repeat(58), '-'.repeat(16), '-'.repeat(16), '-'.repeat(5)),
    row(`baseline A: create tx through pg (${CONCURRENCY} conns), tx/s (mean)`, String(aRate), '', ''),
    row('  runs (start / after ingest / end)', aRuns.map((r) => r.perSecond).join(' / '), '', ''),
    row('  p50 / p99 ms (first run)', `${a.p50Ms} / ${a.p99Ms}`, '', ''),
    row('  CPU ms per tx: postgres / load generator (pg client)', a.cpuMs ? `${round(a.cpuMs.postgres / a.transactions, 2)} / ${round(a.cpuMs.bench / a.transactions, 2)}` : '', '', ''),
    row('baseline B: BullMQ no-op add+process, jobs/s', String(b.perSecond), '', ''),
    row(`ingest: POST /v1/refunds (${CONCURRENCY} conns), accepted/s`, String(ingest.perSecond), `>= ${Math.ceil(aRate * TARGETS.ingestRatio)}`, yes(ratios.ingestToBaselineA >= TARGETS.ingestRatio)),
    row('  ingest / baseline A', ratios.ingestToBaselineA.toFixed(3), `>= ${TARGETS.ingestRatio}`, ''),
    row('  p50 / p99 ms', `${ingest.p50Ms} / ${ingest.p99Ms}`, `p99 <= ${TARGETS.ingestP99Ms}`, yes(ingest.p99Ms <= TARGETS.ingestP99Ms)),
    row('  errors (non-2xx, socket errors, timeouts)', String(ingest.errors), '0', yes(ingest.errors === 0)),
    row('  SQL statements per request', String((phases.ingest as { sqlStatementsPerRequest: number }).sqlStatementsPerRequest), '', ''),
    row('  CPU ms per request: api / postgres / redis / load generator', cpuLine((phases.ingest as { cpuMsPerRequest: Record<string, number> }).cpuMsPerRequest), '', ''),
    row('  GC ms per request (share of its CPU): api', gcLine(ingestGc, ['api']), '', ''),
    row(
      '  first api: loop delay p50/p99/max ms (idle 10); GC >10/>100',
      ingestRuntime
        ? `${ingestRuntime.loopDelay.p50Ms} / ${ingestRuntime.loopDelay.p99Ms} / ${ingestRuntime.loopDelay.maxMs}; ${ingestRuntime.gcPausesOver10Ms} / ${ingestRuntime.gcPausesOver100Ms}`
        : '-',
      '',
      '',
    ),
    row(
      '  first api: steps, mean (p99) ms: admit/snapshot/insert/queue',
      ingestRuntime
        ? ['admission', 'snapshot', 'insert', 'enqueue']
            .map((stage) => {
              const s = ingestRuntime.createStages[stage];
              return s ? `${s.meanMs} (${s.p99Above ? '>' : ''}${s.p99Ms})` : '-';
            })
            .join(' / ')
        : '-',
      '',
      '',
    ),
    ...(phases.ingestAtRate as Array<LoadResult & { fraction: number; targetPerSecond: number; apiCoreShare: number }>).map((r) =>
      row(
        `  open loop ${r.targetPerSecond}/s (${r.fraction}): p50/p90/p99 ms; API core`,
        `${r.p50Ms} / ${r.p90Ms} / ${r.p99Ms}; ${r.apiCoreShare}${r.errors ? `; ${r.errors} errors` : ''}`,
        '',
        '',
      ),
    ),
    ...Object.values(e2e).flatMap((x) => {
      const r = x as ReturnType<typeof settle> extends Promise<infer T> ? T & { latencyMs: number; sqlStatementsPerRefund: number } : never;
      const ratio = r.perSecond / aRate;
      const isSlow = r.latencyMs === 200;
      return [
        row(
          `end to end, emulators ${r.latencyMs} ms: refunds/s`,
          String(r.perSecond),
          isSlow ? `>= ${TARGETS.e2eSlowPerSecond}` : r.latencyMs === 0 ? `>= ${Math.ceil(aRate * TARGETS.e2eRatio)}` : '',
          r.latencyMs === 0 ? yes(ratio >= TARGETS.e2eRatio) : isSlow ? yes(r.perSecond >= TARGETS.e2eSlowPerSecond) : '',
        ),
        row('  end to end / baseline A', ratio.toFixed(3), r.latencyMs === 0 ? `>= ${TARGETS.e2eRatio}` : '', ''),
        row('  refunds/s until final, webhooks not counted (rounds 1-4)', String((x as { perSecondUntilFinal: number }).perSecondUntilFinal), '', ''),
        row(
          '  provider webhooks pending when all final / delivered (retried)',
          (() => {
            const w = (x as { webhooks: { pendingAtFinal: number; delivered: number; retriedDeliveries?: number } }).webhooks;
            return `${w.pendingAtFinal} / ${w.delivered}${w.retriedDeliveries === undefined ? '' : ` (${w.retriedDeliveries})`}`;
          })(),
          '',
          '',
        ),
        row(
          '  made final by webhook / by worker; webhook lag p50 / p99 ms',
          (() => {
            const w = (x as { webhooks: { finalBy?: { webhook: number; worker: number }; deliveryLagMs?: { p50: number; p99: number } } }).webhooks;
            return w.finalBy && w.deliveryLagMs ? `${w.finalBy.webhook} / ${w.finalBy.worker}; ${w.deliveryLagMs.p50} / ${w.deliveryLagMs.p99}` : '';
          })(),
          '',
          '',
        ),
        row('  time to final p50 / p99 ms', `${r.timeToFinalP50Ms} / ${r.timeToFinalP99Ms}`, '', ''),
        row('  final / succeeded / posted', `${r.final} / ${r.succeeded} / ${r.refunds}`, '', r.timedOut ? 'TIMEOUT' : ''),
        row('  provider calls, SQL statements per refund', `${r.providerCallsPerRefund} / ${r.sqlStatementsPerRefund}`, '', ''),
        row('  connections refused, accept queue full (SYNs dropped)', String((x as { listenOverflows?: number }).listenOverflows ?? '-'), '', ''),
        row(
          '  peak accept queue: api / emulator (sampled)',
          ((q?: { api: number; emulator?: number }) => (q ? `${q.api} / ${q.emulator ?? '-'}` : '-'))(
            (x as { acceptQueuePeak?: { api: number; emulator?: number } }).acceptQueuePeak,
          ),
          '',
          '',
        ),
        row(
          '  Redis commands per refund: all (with the scripts\' own) / scripts',
          (({ redisCommandsPerRefund: c }) => (c ? `${c.total} / ${c.scripts}` : '-'))(x as { redisCommandsPerRefund?: { total: number; scripts: number } }),
          '',
          '',
        ),
        row(
          '  refunds rows per refund: updates (HOT share); payments',
          (({ refunds: t, payments: p }) => (t ? `${t.updates} (${Math.round(t.hotShare * 100)} %); ${p?.updates ?? '-'}` : '-'))(
            (x as { rowWritesPerRefund: ReturnType<typeof rowWritesPer> }).rowWritesPerRefund,
          ),
          '',
          '',
        ),
        // What 1,000 refunds/s at 200 ms keeps in flight (two calls each): the target's
        // waiting load, which a slower emulator reaches on this machine's CPU.
        row(
          '  worker jobs active at once: mean / peak',
          `${(x as { activeJobs: { mean: number } }).activeJobs.mean} / ${(x as { activeJobs: { peak: number } }).activeJobs.peak}`,
          r.latencyMs > 0 ? `in flight: ${TARGETS.e2eSlowPerSecond * 2 * 0.2}` : '',
          '',
        ),
        ...cpuRows(x as { cpuMsPerRefund: Record<string, number>; sqlStatementsPerRefund: number; sqlStatementsPerRefundEmulator?: number }),
        row(
          '  CPU per refund in baseline-A transactions: all / service',
          (({ all, service }) => `${all} / ${service ?? '-'}`)((x as { cpuPerRefundInBaselineTx: { all: number; service: number | null } }).cpuPerRefundInBaselineTx),
          r.latencyMs === 0 ? `~<= ${round(1 / TARGETS.e2eRatio, 1)}` : '',
          '',
        ),
        row(
          `  GC ms per refund (share of its CPU): api / worker${emulator ? ' / emulator' : ''}`,
          gcLine((x as { gcPerRefund: Parameters<typeof gcLine>[0] }).gcPerRefund, ['api', 'worker', ...(emulator ? ['emulator'] : [])]),
          '',
          '',
        ),
      ];
    }),
    ...Object.keys(rssPeaks).map((name) =>
      row(`peak RSS ${name} (sampled / VmHWM), MB`, `${rssPeaks[name]} / ${hwm[name] ?? '?'}`, `<= ${TARGETS.rssMb}`, yes(Math.max(rssPeaks[name]!, hwm[name] ?? 0) <= TARGETS.rssMb)),
    ),
    '',
  ];
  process.stdout.write(lines.join('\n') + '\n');

  const dir = path.join(REPO_ROOT, 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `throughput-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
  if (env.BENCH_NO_LATEST !== '1') fs.writeFileSync(path.join(dir, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
  log(`wrote ${path.relative(REPO_ROOT, file)}${env.BENCH_NO_LATEST === '1' ? '' : ' and bench/results/latest.json'}`);
  return Object.values(met).every((m) => m !== false) ? 0 : 1;
}

let runDir: string | undefined;

/**
 * The chaos helpers start services with dist/bench as working directory; `nest build`
 * elsewhere on the machine deletes dist/ (deleteOutDir). The services run from their copy
 * in the run dir, so only the directory has to exist.
 */
async function ensureCwd(): Promise<void> {
  fs.mkdirSync(BUILT, { recursive: true });
}

/** Keeps the service logs (they go with the run dir) in bench/results/logs-<time>/ after a failure. */
function keepLogs(): void {
  if (!runDir || !fs.existsSync(runDir)) return;
  const dest = path.join(REPO_ROOT, 'bench', 'results', `logs-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  fs.mkdirSync(dest, { recursive: true });
  for (const f of fs.readdirSync(runDir)) if (f.endsWith('.log')) fs.copyFileSync(path.join(runDir, f), path.join(dest, f));
  for (const f of ['pg/postgres.log']) if (fs.existsSync(path.join(runDir, f))) fs.copyFileSync(path.join(runDir, f), path.join(dest, 'postgres.log'));
  log(`service logs kept in ${path.relative(REPO_ROOT, dest)}`);
}

const watchdog = setTimeout(() => {
  log(`timed out after ${TIMEOUT_MS} ms; cleaning up`);
  keepLogs();
  void runCleanups().finally(() => process.exit(2));
}, TIMEOUT_MS);

main()
  .then(
    async (code) => {
      clearTimeout(watchdog);
      if (env.BENCH_KEEP_LOGS === '1') keepLogs();
      await runCleanups();
      process.exit(code);
    },
    async (err) => {
      clearTimeout(watchdog);
      process.stderr.write(`[bench] failed: ${(err as Error).stack ?? err}\n`);
      keepLogs();
      await runCleanups();
      process.exit(1);
    },
  );
