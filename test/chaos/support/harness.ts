import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Run directories, cleanup and leftovers of the chaos suite.
 *
 * Everything a scenario starts (its Postgres cluster, its redis-server, the service
 * processes) lives under one temp directory `refunds-chaos-<label>-XXXX` and registers a
 * cleanup here. Cleanups run from afterAll (async, orderly) and, as a last resort, from the
 * test process's `exit` and termination signals (synchronous: SIGKILL by pid, `pg_ctl stop
 * -m immediate`, rm -rf). Child processes are also spawned with a parent-death signal
 * (setpriv --pdeathsig KILL) so they die with the test process even when it is SIGKILLed.
 * A run that was killed too hard to clean up (the Postgres postmaster is a daemon) is
 * cleaned by the next run: see sweepLeftovers().
 */

export const RUN_DIR_PREFIX = 'refunds-chaos-';
/** Set on every child process, so a later run can tell our processes from anyone else's. */
export const RUN_DIR_ENV = 'REFUNDS_CHAOS_RUN_DIR';

interface Cleanup {
  name: string;
  run: () => Promise<void>;
  runSync: () => void;
  done: boolean;
}

const cleanups: Cleanup[] = [];
let hooksInstalled = false;

function runAllSync(): void {
  for (const c of [...cleanups].reverse()) {
    if (c.done) continue;
    c.done = true;
    try {
      c.runSync();
    } catch {
      // Best effort: the process is going away.
    }
  }
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.once('exit', runAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = () => {
      runAllSync();
      process.off(sig, handler);
      process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

/** Registers a cleanup; the returned function runs it now (once). */
export function onCleanup(name: string, run: () => Promise<void>, runSync: () => void): () => Promise<void> {
  installHooks();
  const c: Cleanup = { name, run, runSync, done: false };
  cleanups.push(c);
  return async () => {
    if (c.done) return;
    c.done = true;
    await c.run();
  };
}

/** Runs every pending cleanup, newest first; errors are collected, not thrown half-way. */
export async function runCleanups(): Promise<void> {
  const errors: string[] = [];
  for (const c of [...cleanups].reverse()) {
    if (c.done) continue;
    c.done = true;
    try {
      await c.run();
    } catch (err) {
      errors.push(`${c.name}: ${(err as Error).message}`);
      try {
        c.runSync();
      } catch {
        // already reported
      }
    }
  }
  cleanups.length = 0;
  if (errors.length) process.stderr.write(`chaos cleanup problems:\n  ${errors.join('\n  ')}\n`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A small seeded PRNG (mulberry32), so a failing run can be replayed with CHAOS_SEED. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function seedFromEnv(): number {
  const raw = process.env.CHAOS_SEED;
  if (raw && /^\d+$/.test(raw)) return Number(raw);
  return Math.floor(Math.random() * 2 ** 31);
}

export interface RunDir {
  dir: string;
  /** Removes the directory (kept when CHAOS_KEEP=1, for reading logs). */
  remove(): Promise<void>;
}

/** A fresh temp directory for one scenario, owned by this process (owner.pid). */
export function makeRunDir(label: string): RunDir {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${RUN_DIR_PREFIX}${label}-`));
  // Postgres runs as another user when we are root: it must be able to reach its subdirectory.
  fs.chmodSync(dir, 0o755);
  fs.writeFileSync(path.join(dir, 'owner.pid'), String(process.pid));
  const keep = process.env.CHAOS_KEEP === '1';
  const rm = () => {
    if (!keep) fs.rmSync(dir, { recursive: true, force: true });
  };
  const remove = onCleanup(`run dir ${dir}`, async () => rm(), rm);
  return { dir, remove };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether pid is a process that one of our runs started in runDir (by its environment). */
export function isOurProcess(pid: number, runDir: string): boolean {
  try {
    const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8');
    return environ.split('\0').includes(`${RUN_DIR_ENV}=${runDir}`);
  } catch {
    return false;
  }
}

/**
 * Cleans up after earlier runs of this suite that died without cleaning up: for each
 * `refunds-chaos-*` temp dir whose owner process is gone, stops its Postgres cluster, kills
 * the processes that run started (recorded in children.pids and checked by their
 * environment, so a recycled pid is never touched) and removes the directory.
 */
export function sweepLeftovers(pgCtl: (args: string[]) => void): string[] {
  const swept: string[] = [];
  let entries: string[] = [];
  try {
    entries = fs.readdirSync(os.tmpdir());
  } catch {
    return swept;
  }
  for (const name of entries) {
    if (!name.startsWith(RUN_DIR_PREFIX)) continue;
    const dir = path.join(os.tmpdir(), name);
    let owner = NaN;
    try {
      owner = Number(fs.readFileSync(path.join(dir, 'owner.pid'), 'utf8'));
    } catch {
      // no owner file: a directory being set up right now, or not ours; leave it
      continue;
    }
    if (!Number.isInteger(owner) || alive(owner)) continue;
    const pgdata = path.join(dir, 'pg', 'data');
    if (fs.existsSync(path.join(pgdata, 'postmaster.pid'))) {
      try {
        pgCtl(['stop', '-D', pgdata, '-m', 'immediate', '-w', '-t', '20']);
      } catch {
        // already gone
      }
    }
    try {
      for (const line of fs.readFileSync(path.join(dir, 'children.pids'), 'utf8').split('\n')) {
        const pid = Number(line.trim());
        if (Number.isInteger(pid) && pid > 1 && isOurProcess(pid, dir)) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
      }
    } catch {
      // no children recorded
    }
    fs.rmSync(dir, { recursive: true, force: true });
    swept.push(dir);
  }
  return swept;
}

/** Records a child pid in the run dir, for sweepLeftovers() of a later run. */
export function recordChild(runDir: string, pid: number): void {
  fs.appendFileSync(path.join(runDir, 'children.pids'), `${pid}\n`);
}

let setprivPath: string | null | undefined;

/** The command prefix that gives a child a parent-death signal (Linux, util-linux setpriv). */
export function pdeathsigPrefix(): string[] {
  if (setprivPath === undefined) {
    const found = spawnSync('sh', ['-c', 'command -v setpriv'], { encoding: 'utf8' });
    setprivPath = found.status === 0 && found.stdout.trim() ? found.stdout.trim() : null;
    if (setprivPath && spawnSync(setprivPath, ['--pdeathsig', 'KILL', 'true']).status !== 0) setprivPath = null;
  }
  return setprivPath ? [setprivPath, '--pdeathsig', 'KILL'] : [];
}

/** The last `lines` lines of a log file (for failure messages). */
export function tail(file: string, lines = 40): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.split('\n').slice(-lines - 1).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Polls fn until it returns a truthy value or the deadline passes (then returns undefined). */
export async function pollUntil<T>(fn: () => Promise<T | undefined | null | false>, timeoutMs: number, intervalMs = 200): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch {
      // not yet
    }
    await sleep(intervalMs);
  }
  return undefined;
}
