// `npm run bench:reports`: the finance reports on 1,000,000 refunds (issue 6). Not a test.
//
//   1. creates a database of its own and runs the migrations;
//   2. bulk-loads merchants, payments and BENCH_ROWS (default 1,000,000) refunds with
//      INSERT ... SELECT generate_series (mixed providers, currencies, statuses; decimals
//      such as 0.1, 0.2, ...; fees in provider_details), then VACUUM ANALYZE (what
//      autovacuum does after a bulk load);
//   3. starts the service as a child process (ROLE=api) on 127.0.0.1, so the RSS measured
//      is the service's own;
//   4. measures the summary (median of 5 after a warm-up), the CSV export (streamed fully,
//      rows counted, rows/s) and the service's peak RSS during the export (VmRSS sampled
//      from /proc every 20 ms);
//   5. prints a table, writes bench/results/reports-<timestamp>.json, stops the service
//      and drops the database, also on failure or after BENCH_TIMEOUT_MS.
//
// Environment: BENCH_ROWS, BENCH_DATABASE_ADMIN_URL (default: the test admin URL, the local
// Postgres), BENCH_REDIS_URL, BENCH_TIMEOUT_MS (default 20 minutes), BENCH_KEEP_DATABASE=true
// (keep the loaded database for EXPLAIN sessions; its name is printed; drop it by hand).
import { ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { DataSource } from 'typeorm';
import { dataSourceOptions, runMigrations } from '../src/database/data-source.js';

const ROWS = Number(process.env.BENCH_ROWS ?? 1_000_000);
const ADMIN_URL =
  process.env.BENCH_DATABASE_ADMIN_URL ?? process.env.TEST_DATABASE_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.BENCH_REDIS_URL ?? process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const TIMEOUT_MS = Number(process.env.BENCH_TIMEOUT_MS ?? 20 * 60_000);
const KEEP_DATABASE = process.env.BENCH_KEEP_DATABASE === 'true';
const TARGETS = { summaryMs: 300, exportRowsPerSecond: 100_000, rssGrowthMb: 100 };

const here = path.dirname(fileURLToPath(import.meta.url));
// Compiled to dist/bench/bench/reports.js; the service beside it at dist/bench/src/main.js.
const SERVICE_MAIN = path.resolve(here, '../src/main.js');
const REPO_ROOT = path.resolve(here, '../../..');

const log = (msg: string) => process.stdout.write(`[bench:reports] ${msg}\n`);

// ------------------------------------------------------------------------------ database

async function adminQuery(sql: string): Promise<void> {
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(sql);
  } finally {
    await admin.end();
  }
}

function databaseUrl(name: string): string {
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

async function migrate(url: string): Promise<void> {
  const ds = new DataSource(dataSourceOptions({ databaseUrl: url, dbPoolSize: 2 }));
  await ds.initialize();
  try {
    await runMigrations(ds);
  } finally {
    await ds.destroy();
  }
}

/**
 * The data set, all in SQL. Per refund g (1..ROWS): provider g % 3, a currency of that
 * provider, a status spread like a live system (mostly succeeded), an amount of
 * (g % 997 + 1) / 10 (0.1, 0.2, ...), created over 90 days in order.
 */
async function load(url: string): Promise<{ seconds: number; tableMb: number; indexMb: number }> {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  const started = Date.now();
  try {
    // Commits stay synchronous (a dozen of them; nothing to gain): the VACUUM after the load
    // marks a page all-visible only once the commits of its rows are flushed, and with
    // asynchronous commit it ran too soon and marked none, so every summary paid a heap visit
    // per row that autovacuum would have spared it (finding 40).
    await db.query(`INSERT INTO merchants (id, name) SELECT 'M' || lpad(g::text, 4, '0'), 'Merchant ' || g FROM generate_series(0, 49) g`);
    const payments = Math.max(1, Math.ceil(ROWS / 10));
    await db.query(
      `INSERT INTO payments (provider, payment_id, merchant_id, amount, currency, status)
       SELECT (ARRAY['binance_pay', 'cobo', 'lean'])[p % 3 + 1], 'P' || p, 'M' || lpad((p % 50)::text, 4, '0'), 1000000,
              CASE p % 3 WHEN 0 THEN (ARRAY['USDT', 'USDC'])[p % 2 + 1]
                         WHEN 1 THEN (ARRAY['USDT', 'USDC'])[p % 2 + 1]
                         ELSE (ARRAY['AED', 'SAR'])[p % 2 + 1] END,
              'PAID'
         FROM generate_series(0, $1::int - 1) p`,
      [payments],
    );
    const chunk = 100_000;
    for (let lo = 1; lo <= ROWS; lo += chunk) {
      const hi = Math.min(ROWS, lo + chunk - 1);
      await db.query(
        `INSERT INTO refunds (id, merchant_id, provider, payment_id, amount, refunded_amount, currency, status, reason,
                              provider_request_id, provider_refund_id, provider_status, failure_code, failure_category,
                              provider_details, idempotency_key, request_hash, next_check_at, created_at, updated_at,
                              status_changed_at, completed_at, review_reason, review_flagged_at)
         SELECT gen_random_uuid(), x.merchant, x.provider, x.payment, x.amount,
                CASE x.status WHEN 'succeeded' THEN x.amount WHEN 'partially_succeeded' THEN x.amount / 2 ELSE 0 END,
                x.currency, x.status,
                (ARRAY['requested_by_customer', 'duplicate', 'fraudulent', 'order_canceled', 'other'])[x.g % 5 + 1],
                CASE WHEN x.status <> 'pending_approval' THEN 'req-' || x.g END,
                CASE WHEN x.final THEN 'pr-' || x.g END,
                CASE WHEN x.final THEN upper(x.status) END,
                CASE WHEN x.status = 'failed' THEN (ARRAY['400304', 'REFUND_FAIL', 'rejected', '2040'])[x.g % 4 + 1] END,
                CASE WHEN x.status = 'failed' THEN (ARRAY['retryable', 'final'])[x.g % 2 + 1] END,
                CASE x.provider
                  WHEN 'binance_pay' THEN jsonb_build_object('remainingAttempts', 9, 'payerOpenId', 'open-' || x.g,
                                              'providerRefundAmount', trim_scale(x.amount)::text,
                                              'refundCommission', trim_scale((x.g % 7)::numeric / 100)::text)
                  WHEN 'cobo' THEN jsonb_build_object('tokenId', 'TRON_' || x.currency, 'chainId', 'TRON', 'refundType', 'merchant',
                                              'merchantFee', jsonb_build_object('amount', '0.1', 'tokenId', 'TRON_' || x.currency),
                                              'commissionFee', '0.25', 'transactions', '[]'::jsonb)
                  ELSE jsonb_build_object('reasonCode', 'DUPLICATE', 'externalReference', 'req-' || x.g)
                END,
                'k' || x.g, 'h',
                CASE WHEN x.status IN ('queued', 'processing', 'requires_action') THEN x.created + interval '1 minute' END,
                x.created, x.created, x.created,
                CASE WHEN x.final THEN x.created + interval '42.5 seconds' END,
                CASE WHEN x.g % 10007 = 0 THEN 'provider reports a different outcome' END,
                CASE WHEN x.g % 10007 = 0 THEN x.created + interval '1 hour' END
           FROM (
             SELECT s.g, s.p, s.status,
                    s.status IN ('succeeded', 'partially_succeeded', 'failed', 'canceled') AS final,
                    'M' || lpad((s.p % 50)::text, 4, '0') AS merchant,
                    (ARRAY['binance_pay', 'cobo', 'lean'])[s.p % 3 + 1] AS provider,
                    'P' || s.p AS payment,
                    CASE s.p % 3 WHEN 2 THEN (ARRAY['AED', 'SAR'])[s.p % 2 + 1] ELSE (ARRAY['USDT', 'USDC'])[s.p % 2 + 1] END AS currency,
                    ((s.g % 997) + 1)::numeric / 10 AS amount,
                    timestamptz '2025-01-01 00:00:00+00' + (s.g::numeric * 7776 / $3::numeric) * interval '1 second' AS created
               FROM (
                 SELECT g, g % $4::int AS p,
                        CASE
                          WHEN g % 100 < 62 THEN 'succeeded'
                          WHEN g % 100 < 72 THEN 'failed'
                          WHEN g % 100 < 77 THEN 'partially_succeeded'
                          WHEN g % 100 < 82 THEN 'canceled'
                          WHEN g % 100 < 87 THEN 'queued'
                          WHEN g % 100 < 94 THEN 'processing'
                          WHEN g % 100 < 97 AND g % $4::int % 3 = 1 THEN 'requires_action'
                          WHEN g % 100 < 97 THEN 'processing'
                          ELSE 'pending_approval'
                        END AS status
                   FROM generate_series($1::int, $2::int) g
               ) s
           ) x`,
        [lo, hi, ROWS / 1000, payments],
      );
      log(`  loaded ${hi.toLocaleString('en-US')} / ${ROWS.toLocaleString('en-US')} refunds (${((Date.now() - started) / 1000).toFixed(0)} s)`);
    }
    await db.query(`VACUUM ANALYZE merchants`);
    await db.query(`VACUUM ANALYZE payments`);
    await db.query(`VACUUM ANALYZE refunds`);
    const { rows } = await db.query(
      `SELECT pg_table_size('refunds') AS t, pg_indexes_size('refunds') AS i`,
    );
    return {
      seconds: (Date.now() - started) / 1000,
      tableMb: Math.round(Number(rows[0].t) / 2 ** 20),
      indexMb: Math.round(Number(rows[0].i) / 2 ** 20),
    };
  } finally {
    await db.end();
  }
}

// ------------------------------------------------------------------------------- service

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function request(
  base: string,
  method: string,
  urlPath: string,
  headers: Record<string, string> = {},
  body?: unknown,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      `${base}${urlPath}`,
      { method, headers: { ...headers, ...(data ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } : {}) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

async function startService(url: string, port: number, adminKey: string, queuePrefix: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [SERVICE_MAIN], {
    cwd: REPO_ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      NODE_ENV: 'development',
      ROLE: 'api',
      PORT: String(port),
      DATABASE_URL: url,
      REDIS_URL,
      QUEUE_PREFIX: queuePrefix,
      SANDBOX: 'false',
      ADMIN_API_KEY: adminKey,
      LOG_LEVEL: 'warn',
      DB_POOL_SIZE: '20',
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the service exited with ${child.exitCode} at start`);
    try {
      const res = await request(base, 'GET', '/health/live');
      if (res.status === 200) return child;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('the service did not start within 60 s');
}

async function stopService(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

// ------------------------------------------------------------------------------ measures

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function summaryLatency(base: string, key: string, query: string): Promise<{ query: string; medianMs: number; runsMs: number[]; groups: number }> {
  const auth = { Authorization: `Bearer ${key}` };
  const warm = await request(base, 'GET', `/v1/reports/summary${query}`, auth);
  if (warm.status !== 200) throw new Error(`summary ${query} answered ${warm.status}: ${warm.body.slice(0, 300)}`);
  const runs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = process.hrtime.bigint();
    const res = await request(base, 'GET', `/v1/reports/summary${query}`, auth);
    runs.push(Number(process.hrtime.bigint() - t) / 1e6);
    if (res.status !== 200) throw new Error(`summary answered ${res.status}`);
  }
  return { query, medianMs: round(median(runs)), runsMs: runs.map(round), groups: JSON.parse(warm.body).data.length };
}

interface ExportResult {
  query: string;
  rows: number;
  bytes: number;
  seconds: number;
  firstByteMs: number;
  rowsPerSecond: number;
  rssBeforeMb: number;
  rssPeakMb: number;
  rssGrowthMb: number;
  /** 1-minute load average after the run: other work on the machine skews the figures. */
  loadAverage: number;
}

/** Streams the whole export, counting lines, while sampling the service's RSS. */
async function exportRun(base: string, key: string, pid: number, query = ''): Promise<ExportResult> {
  const rssBefore = rssMb(pid);
  let peak = rssBefore;
  const sampler = setInterval(() => {
    try {
      peak = Math.max(peak, rssMb(pid));
    } catch {
      // process gone: the export will fail below
    }
  }, 20);
  const started = process.hrtime.bigint();
  let firstByte = 0;
  let lines = 0;
  let bytes = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      const req = http.get(`${base}/v1/reports/refunds.csv${query}`, { headers: { Authorization: `Bearer ${key}` } }, (res) => {
        if (res.statusCode !== 200) return reject(new Error(`export answered ${res.statusCode}`));
        res.on('data', (chunk: Buffer) => {
          if (!firstByte) firstByte = Number(process.hrtime.bigint() - started) / 1e6;
          bytes += chunk.length;
          for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
        });
        res.on('end', () => (res.complete ? resolve() : reject(new Error('export truncated'))));
        res.on('error', reject);
      });
      req.on('error', reject);
    });
  } finally {
    clearInterval(sampler);
  }
  peak = Math.max(peak, rssMb(pid));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  // Line feeds end records; one belongs to the header. (Every cell of this data set is free
  // of line breaks, so lines = records.)
  const rows = lines - 1;
  return {
    query,
    rows,
    bytes,
    seconds: round(seconds),
    firstByteMs: round(firstByte),
    rowsPerSecond: Math.round(rows / seconds),
    rssBeforeMb: round(rssBefore),
    rssPeakMb: round(peak),
    rssGrowthMb: round(peak - rssBefore),
    loadAverage: os.loadavg()[0],
  };
}

const round = (x: number) => Math.round(x * 10) / 10;

async function explain(url: string, sql: string): Promise<string> {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    const { rows } = await db.query(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${sql}`);
    return rows.map((r) => r['QUERY PLAN']).join('\n');
  } finally {
    await db.end();
  }
}

// ---------------------------------------------------------------------------------- main

async function deleteRedisPrefix(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      if (keys.length) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

async function main(): Promise<number> {
  const name = `refunds_bench_${randomBytes(4).toString('hex')}`;
  const url = databaseUrl(name);
  const queuePrefix = `bench_${randomBytes(4).toString('hex')}`;
  const adminKey = randomBytes(24).toString('hex');
  let child: ChildProcess | undefined;
  let created = false;

  const cleanup = async () => {
    await stopService(child).catch(() => undefined);
    if (created && KEEP_DATABASE) log(`kept database ${name} (BENCH_KEEP_DATABASE=true)`);
    else if (created) await adminQuery(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).catch((e) => log(`drop failed: ${e}`));
    await deleteRedisPrefix(queuePrefix).catch(() => undefined);
  };
  const watchdog = setTimeout(() => {
    log(`timed out after ${TIMEOUT_MS} ms; cleaning up`);
    void cleanup().finally(() => process.exit(2));
  }, TIMEOUT_MS);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => void cleanup().finally(() => process.exit(130)));
  }

  try {
    log(`database ${name}`);
    await adminQuery(`CREATE DATABASE "${name}"`);
    created = true;
    await migrate(url);
    log(`loading ${ROWS.toLocaleString('en-US')} refunds`);
    const loaded = await load(url);
    log(`loaded in ${loaded.seconds.toFixed(1)} s (refunds: table ${loaded.tableMb} MB, indexes ${loaded.indexMb} MB)`);

    const port = await freePort();
    child = await startService(url, port, adminKey, queuePrefix);
    const base = `http://127.0.0.1:${port}`;
    const keyRes = await request(base, 'POST', '/v1/api-keys', { Authorization: `Bearer ${adminKey}` }, { role: 'finance', name: 'bench' });
    if (keyRes.status !== 201) throw new Error(`api key: ${keyRes.status} ${keyRes.body}`);
    const financeKey = JSON.parse(keyRes.body).key as string;
    const rssIdleMb = round(rssMb(child.pid!));
    const loadAtStart = os.loadavg()[0];

    const summaries = [
      await summaryLatency(base, financeKey, ''),
      await summaryLatency(base, financeKey, '?groupBy=provider,currency,status,merchant,day'),
      await summaryLatency(base, financeKey, '?from=2025-02-01&to=2025-03-01&groupBy=provider,currency'),
      await summaryLatency(base, financeKey, '?groupBy='),
    ];
    // The whole table twice (the figures are the better throughput and the larger RSS
    // growth of the two), then a tenth of it: flat memory means the same growth for both.
    const fullRuns = [await exportRun(base, financeKey, child.pid!), await exportRun(base, financeKey, child.pid!)];
    for (const run of fullRuns) if (run.rows !== ROWS) throw new Error(`export streamed ${run.rows} rows, expected ${ROWS}`);
    const tenth = await exportRun(base, financeKey, child.pid!, '?from=2025-01-01&to=2025-01-10');
    const exported = {
      rows: ROWS,
      rowsPerSecond: Math.max(...fullRuns.map((r) => r.rowsPerSecond)),
      rssGrowthMb: Math.max(...fullRuns.map((r) => r.rssGrowthMb)),
      runs: [...fullRuns, tenth],
    };

    const plan = await explain(
      url,
      `SELECT provider, currency, status, count(*), sum(amount), sum(refunded_amount) FROM refunds GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`,
    );

    const summaryMs = summaries[0].medianMs;
    const result = {
      at: new Date().toISOString(),
      rows: ROWS,
      machine: { cpus: os.cpus().length, node: process.version },
      load: loaded,
      service: { rssIdleMb },
      loadAverageAtStart: loadAtStart,
      summary: summaries,
      export: exported,
      summaryPlan: plan,
      targets: TARGETS,
      met: {
        summary: summaryMs < TARGETS.summaryMs,
        exportRowsPerSecond: exported.rowsPerSecond >= TARGETS.exportRowsPerSecond,
        rssGrowth: exported.rssGrowthMb < TARGETS.rssGrowthMb,
      },
    };

    const line = (a: string, b: string, c: string, d: string) => `${a.padEnd(70)} ${b.padStart(14)} ${c.padStart(14)} ${d.padStart(6)}`;
    const out = [
      '',
      `finance reports on ${ROWS.toLocaleString('en-US')} refunds`,
      line('measure', 'value', 'target', 'met'),
      line('-'.repeat(70), '-'.repeat(14), '-'.repeat(14), '-'.repeat(6)),
      ...summaries.map((s, i) =>
        line(`summary ${s.query || '(default groupBy)'} [${s.groups} rows], median of 5`, `${s.medianMs} ms`, i === 0 ? `< ${TARGETS.summaryMs} ms` : '', i === 0 ? (result.met.summary ? 'yes' : 'NO') : ''),
      ),
      line('CSV export rows/s', exported.rowsPerSecond.toLocaleString('en-US'), `>= ${TARGETS.exportRowsPerSecond.toLocaleString('en-US')}`, result.met.exportRowsPerSecond ? 'yes' : 'NO'),
      ...exported.runs.map((r) =>
        line(
          `  export${r.query ? ` ${r.query}` : ''}: rows, s, first byte`,
          `${r.rows.toLocaleString('en-US')}`,
          `${r.seconds} s`,
          `${Math.round(r.firstByteMs)}ms`,
        ),
      ),
      ...exported.runs.map((r) =>
        line(`  export${r.query ? ` ${r.query}` : ''}: rows/s, RSS before -> peak (growth)`, r.rowsPerSecond.toLocaleString('en-US'), `${r.rssBeforeMb} -> ${r.rssPeakMb}`, `+${Math.round(r.rssGrowthMb)}`),
      ),
      line('service RSS growth during export (max of the full runs)', `${exported.rssGrowthMb} MB`, `< ${TARGETS.rssGrowthMb} MB`, result.met.rssGrowth ? 'yes' : 'NO'),
      line('1-min load average at start / after the last export', `${loadAtStart.toFixed(2)} / ${exported.runs[2].loadAverage.toFixed(2)}`, '(2 cores)', ''),
      '',
    ];
    process.stdout.write(out.join('\n') + '\n');

    const dir = path.join(REPO_ROOT, 'bench', 'results');
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `reports-${result.at.replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
    log(`wrote ${path.relative(REPO_ROOT, file)}`);
    return Object.values(result.met).every(Boolean) ? 0 : 1;
  } finally {
    clearTimeout(watchdog);
    await cleanup();
    log(KEEP_DATABASE ? 'service stopped' : 'service stopped, database dropped');
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`[bench:reports] failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
