// Before and after on one machine: runs bench/throughput.ts on two builds of the service in
// alternation (A B B A A B ...), so both see the same stretch of a shared machine's speed,
// and prints each figure of every run side by side with the change of the means.
//
// Why: the machine's speed drifts by a factor of two or more within hours (docs/performance.md,
// finding 36), so a change of 10-20 % shows only between runs made minutes apart, in turns.
// Every round since round 7 did this by hand; this is that method as one command.
//
//   npm run bench:compare -- <build A> <build B>
//
// A build is a directory as `npx nest build && npx tsc -p bench/tsconfig.json` leaves in
// dist/bench (src/, migrations/); copy one aside before changing the code, e.g.
// `cp -r dist/bench /tmp/before`, or build an older commit in a git worktree.
//
// Environment (defaults in brackets):
//   BENCH_COMPARE_PAIRS [2]                runs of each build
//   BENCH_COMPARE_NODE_MODULES_A, _B       node_modules of a build whose dependencies differ
//                                          (passed as BENCH_SERVICE_NODE_MODULES)
//   every BENCH_* setting of throughput.ts passes through; shorter runs by default here:
//   BENCH_INGEST_REQUESTS [4000], BENCH_E2E_REFUNDS [4000], BENCH_E2E_LATENCIES [0],
//   BENCH_BASELINE_SECONDS [5], BENCH_BULLMQ_JOBS [2000], BENCH_INGEST_RATES [0.05,0.5],
//   BENCH_INGEST_RATE_SECONDS [4]
// Each run's JSON goes to bench/results/ as usual (labels compare-a-1, compare-b-1, ...);
// latest.json is not touched. The table, with the runs' files and settings, is also written
// to bench/results/compare-<time>.md, to be cited next to them.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const env = process.env;
const [buildA, buildB] = process.argv.slice(2);
if (!buildA || !buildB || !fs.existsSync(buildA) || !fs.existsSync(buildB)) {
  process.stderr.write('usage: npm run bench:compare -- <build A> <build B>  (directories like dist/bench)\n');
  process.exit(2);
}
const PAIRS = Math.max(1, Number(env.BENCH_COMPARE_PAIRS ?? 2) || 2);
const SHORT: Record<string, string> = {
  BENCH_INGEST_REQUESTS: '4000',
  BENCH_E2E_REFUNDS: '4000',
  BENCH_E2E_LATENCIES: '0',
  BENCH_BASELINE_SECONDS: '5',
  BENCH_BULLMQ_JOBS: '2000',
  // Two open-loop steps, shorter: the light load and the middle of the curve (finding 64).
  BENCH_INGEST_RATES: '0.05,0.5',
  BENCH_INGEST_RATE_SECONDS: '4',
};
const HERE = path.dirname(fileURLToPath(import.meta.url));
const THROUGHPUT = path.join(HERE, 'throughput.js');
// dist/bench/bench -> the repository, as throughput.ts finds it.
const RESULTS = path.join(path.resolve(HERE, '../../..'), 'bench', 'results');

type Side = 'a' | 'b';
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a run's JSON, read loosely
type Result = Record<string, any>;

/** One run of throughput.ts on a build; resolves with its JSON. */
function run(side: Side, n: number): Promise<Result> {
  const build = side === 'a' ? buildA! : buildB!;
  const modules = side === 'a' ? env.BENCH_COMPARE_NODE_MODULES_A : env.BENCH_COMPARE_NODE_MODULES_B;
  const label = `compare-${side}-${n}`;
  const childEnv: NodeJS.ProcessEnv = {
    ...SHORT,
    ...env,
    BENCH_SERVICE_BUILD: path.resolve(build),
    ...(modules ? { BENCH_SERVICE_NODE_MODULES: path.resolve(modules) } : {}),
    BENCH_NO_LATEST: '1',
    BENCH_LABEL: label,
  };
  process.stdout.write(`[compare] ${label}: ${build}\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [THROUGHPUT], { env: childEnv, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.on('error', reject);
    // throughput.ts exits 1 when a target is unmet, which is normal on this machine: what
    // counts is whether it wrote its figures.
    child.on('close', (code) => {
      const wrote = /\[bench\] wrote (\S+\.json)/.exec(out);
      if (!wrote) return reject(new Error(`${label} wrote no results (exit ${code}):\n${out.slice(-2000)}`));
      resolve({ ...(JSON.parse(fs.readFileSync(wrote[1]!, 'utf8')) as Result), file: path.basename(wrote[1]!) });
    });
  });
}

/** The figures compared, read from a run's JSON (undefined where the run has none). */
function figures(r: Result): Array<[string, number | undefined]> {
  const rows: Array<[string, number | undefined]> = [
    ['baseline A tx/s (mean)', r.phases?.baselineA?.meanPerSecond],
    ['ingest creates/s', r.phases?.ingest?.perSecond],
    ['ingest p99 ms', r.phases?.ingest?.p99Ms],
    ['ingest API CPU ms per create', r.phases?.ingest?.cpuMsPerRequest?.api],
  ];
  // Where the creates waited in the first API process (finding 63): a change that shortens one
  // step shows here even when the closed loop's total does not move (Little's law).
  for (const stage of ['admission', 'snapshot', 'insert', 'enqueue']) {
    rows.push([`ingest ${stage} step, mean ms`, r.phases?.ingest?.apiRuntime?.createStages?.[stage]?.meanMs]);
  }
  // The open-loop steps (finding 64): latency and the API's CPU per create at a share of the closed loop's rate.
  for (const step of (r.phases?.ingestAtRate ?? []) as Result[]) {
    rows.push(
      // A share of each run's own closed-loop rate: compare the rates too before the rest.
      [`ingest open loop ${step.fraction}: creates/s sent`, step.targetPerSecond],
      // The median too: a saving of a millisecond per create shows there, under the tail's noise.
      [`ingest open loop ${step.fraction}: p50 ms`, step.p50Ms],
      [`ingest open loop ${step.fraction}: p99 ms`, step.p99Ms],
      [`ingest open loop ${step.fraction}: API CPU ms per create`, step.cpuMsPerRequest?.api],
    );
  }
  for (const [latency, e] of Object.entries<Result>(r.phases?.endToEnd ?? {})) {
    const cpu = e.cpuMsPerRefund ?? {};
    const service = ['api', 'worker', 'postgres', 'redis'].reduce((sum, k) => sum + (cpu[k] ?? 0), 0);
    const control = cpu.emulator === undefined ? undefined : round2(cpu.emulator + (cpu.postgresEmulator ?? 0));
    rows.push(
      [`e2e ${latency} ms refunds/s`, e.perSecond],
      [`e2e ${latency} ms provider calls per refund`, e.providerCallsPerRefund],
      [`e2e ${latency} ms service statements per refund`, round2(e.sqlStatementsPerRefund - (e.sqlStatementsPerRefundEmulator ?? 0))],
      // Like the statements, independent of the machine's speed: what Postgres writes per refund.
      [`e2e ${latency} ms refunds row updates per refund`, e.rowWritesPerRefund?.refunds?.updates],
      [`e2e ${latency} ms Redis commands per refund (scripts)`, e.redisCommandsPerRefund?.scripts],
      [`e2e ${latency} ms Redis commands per refund (all)`, e.redisCommandsPerRefund?.total],
      [`e2e ${latency} ms CPU ms per refund: api`, cpu.api],
      [`e2e ${latency} ms CPU ms per refund: worker`, cpu.worker],
      [`e2e ${latency} ms CPU ms per refund: postgres`, cpu.postgres],
      [`e2e ${latency} ms CPU ms per refund: service`, round2(service)],
      // The emulators are the same code in both builds unless the change is theirs: a control,
      // whose change shows how much the machine's speed moved between the sides.
      [`e2e ${latency} ms CPU ms per refund: emulator + its postgres (control)`, control],
      // The service's CPU in units of the control's, run by run: the machine's speed, which
      // moves both, mostly divides out, so this row shows the change itself best (finding 48).
      [`e2e ${latency} ms service CPU ÷ control`, control ? round2(service / control) : undefined],
      // The emulator process alone: what a change to the emulators moves (finding 55), where
      // the control is no control.
      [`e2e ${latency} ms CPU ms per refund: emulator process`, cpu.emulator],
      // Provider webhooks that needed a second delivery attempt (the worker polls meanwhile).
      [`e2e ${latency} ms provider webhooks retried`, e.webhooks?.retriedDeliveries],
      // Connections the kernel refused with a full accept queue, machine-wide (finding 56).
      [`e2e ${latency} ms connections refused (accept queue full)`, e.listenOverflows],
      // The largest accept queues seen: bursts of new connections waiting for a busy process (finding 57).
      [`e2e ${latency} ms peak accept queue: api`, e.acceptQueuePeak?.api],
      [`e2e ${latency} ms peak accept queue: emulator`, e.acceptQueuePeak?.emulator],
    );
  }
  return rows;
}

const round2 = (x: number) => Math.round(x * 100) / 100;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function main(): Promise<void> {
  const results: Record<Side, Result[]> = { a: [], b: [] };
  // A B, then B A: a steady drift of the machine's speed falls on both sides alike.
  for (let i = 1; i <= PAIRS; i++) {
    const order: Side[] = i % 2 === 1 ? ['a', 'b'] : ['b', 'a'];
    for (const side of order) results[side].push(await run(side, i));
  }
  const table = new Map<string, Record<Side, number[]>>();
  for (const side of ['a', 'b'] as const) {
    for (const r of results[side]) {
      for (const [name, value] of figures(r)) {
        if (value === undefined || !Number.isFinite(value)) continue;
        const row = table.get(name) ?? { a: [], b: [] };
        row[side].push(value);
        table.set(name, row);
      }
    }
  }
  const lines: string[][] = [['figure', `A: ${buildA}`, `B: ${buildB}`, 'B vs A (means)']];
  for (const [name, row] of table) {
    const change = row.a.length && row.b.length && mean(row.a) !== 0 ? `${((mean(row.b) / mean(row.a) - 1) * 100).toFixed(1)} %` : '';
    lines.push([name, row.a.join(' / '), row.b.join(' / '), change]);
  }
  const widths = lines[0]!.map((_, c) => Math.max(...lines.map((l) => l[c]!.length)));
  process.stdout.write('\n' + lines.map((l) => l.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ')).join('\n') + '\n');
  const runs = (['a', 'b'] as const).flatMap((s) => results[s]).sort((x, y) => String(x.at).localeCompare(String(y.at)));
  process.stdout.write(`\nruns in order of time: ${runs.map((r) => `${r.label} ${r.at}`).join(', ')}\n`);
  const file = path.join(RESULTS, `compare-${new Date().toISOString().replace(/[:.]/g, '-')}.md`);
  fs.mkdirSync(RESULTS, { recursive: true });
  fs.writeFileSync(file, markdown(lines, runs));
  process.stdout.write(`[compare] wrote ${path.relative(process.cwd(), file)}\n`);
}

/** The table as Markdown, with the runs behind it and the settings they shared. */
function markdown(lines: string[][], runs: Result[]): string {
  const row = (cells: string[]) => `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`;
  const settings = Object.entries(env)
    .filter(([k]) => k.startsWith('BENCH_'))
    .map(([k, v]) => `${k}=${v}`);
  const shorter = Object.entries(SHORT)
    .filter(([k]) => env[k] === undefined)
    .map(([k, v]) => `${k}=${v}`);
  return [
    `# bench:compare, ${new Date().toISOString()}`,
    '',
    `- A: \`${buildA}\``,
    `- B: \`${buildB}\``,
    `- settings: ${[...shorter, ...settings].map((s) => `\`${s}\``).join(', ') || 'defaults'}`,
    `- runs in order of time: ${runs.map((r) => `${r.label} (\`${r.file}\`)`).join(', ')}`,
    '',
    row(lines[0]!),
    row(lines[0]!.map((_, c) => (c === 0 ? '---' : '---:'))),
    ...lines.slice(1).map(row),
    '',
  ].join('\n');
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
