import { ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RUN_DIR_ENV, onCleanup, pdeathsigPrefix, recordChild, sleep, tail } from './harness.js';
import { freePort } from './ports.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The built service: CHAOS_SERVICE_ENTRY, else dist/src/main.js (npm run build). */
export function serviceEntry(): string {
  const entry = process.env.CHAOS_SERVICE_ENTRY ?? path.join(REPO_ROOT, 'dist/src/main.js');
  if (!fs.existsSync(entry)) throw new Error(`${entry} not found: run "npm run build" before "npm run test:chaos"`);
  return entry;
}

/** Timings of the brief: polls, sweeps and leases in (fractions of) seconds. */
export const CHAOS_TIMINGS: Record<string, string> = {
  POLL_INITIAL_DELAY_MS: '100',
  POLL_MAX_DELAY_MS: '1000',
  SWEEP_INTERVAL_MS: '500',
  SWEEP_GRACE_MS: '2000',
  LEASE_MS: '6000',
  PROVIDER_TIMEOUT_MS: '2000',
  ABSENCE_GRACE_MS: '1000',
};

export type Role = 'api' | 'worker' | 'all';

/** How long a worker whose /metrics never answers must stay up to be taken as started. */
const WORKER_READY_FALLBACK_MS = 20_000;

export interface ExitRecord {
  name: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  at: number;
  expected: boolean;
  /** The process died before it served (see bootCrashes). */
  duringBoot: boolean;
}

/**
 * One service process (`node dist/src/main.js`) with its role and environment. Its HTTP port
 * (api, all) or metrics port (worker) is fixed for its whole life, so a restarted process
 * comes back where the others expect it. stdout/stderr go to <run dir>/<name>.log.
 */
export class ServiceProcess {
  private child?: ChildProcess;
  private expectingExit = false;
  readonly logFile: string;
  starts = 0;
  kills = 0;
  readonly exits: ExitRecord[] = [];
  /** Failed boots under startSupervised (the log tail of each). */
  readonly bootCrashes: string[] = [];

  constructor(
    readonly name: string,
    readonly role: Role,
    private readonly runDir: string,
    /** HTTP port for api/all, metrics port for worker. */
    readonly port: number,
    private readonly env: Record<string, string>,
  ) {
    this.logFile = path.join(runDir, `${name}.log`);
    onCleanup(
      `service ${name}`,
      async () => this.stop(),
      () => {
        if (this.child?.pid && this.isRunning) process.kill(this.child.pid, 'SIGKILL');
      },
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get isRunning(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Exits nobody asked for after the process was up (a crash, or giving up on a dependency). */
  get unexpectedExits(): ExitRecord[] {
    return this.exits.filter((e) => !e.expected && !e.duringBoot);
  }

  /** Spawns the process and waits until it serves (HTTP /health/live, or a worker's /metrics). */
  async start(readyTimeoutMs = 90_000): Promise<void> {
    if (this.isRunning) throw new Error(`${this.name} is already running`);
    const fd = fs.openSync(this.logFile, 'a');
    fs.writeSync(fd, `\n----- start #${this.starts + 1} at ${new Date().toISOString()} -----\n`);
    const logOffset = fs.fstatSync(fd).size;
    const argv = [...pdeathsigPrefix(), process.execPath, serviceEntry()];
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: REPO_ROOT,
      stdio: ['ignore', fd, fd],
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: process.env.HOME ?? '/tmp',
        [RUN_DIR_ENV]: this.runDir,
        ...this.env,
        ROLE: this.role,
        ...(this.role === 'worker' ? { METRICS_PORT: String(this.port) } : { PORT: String(this.port), METRICS_PORT: '0' }),
      },
    });
    fs.closeSync(fd);
    this.child = child;
    this.starts++;
    this.expectingExit = false;
    if (child.pid) recordChild(this.runDir, child.pid);
    let booting = true;
    child.once('exit', (code, signal) => {
      this.exits.push({ name: this.name, code, signal, at: Date.now(), expected: this.expectingExit, duringBoot: booting });
    });
    const probe = this.role === 'worker' ? `${this.url}/metrics` : `${this.url}/health/live`;
    let ready = false;
    const spawnedAt = Date.now();
    const deadline = spawnedAt + readyTimeoutMs;
    while (!ready && this.isRunning && Date.now() < deadline) {
      // A build without the worker metrics server: a worker that stays up is taken as ready.
      if (this.role === 'worker' && Date.now() - spawnedAt > WORKER_READY_FALLBACK_MS) {
        ready = true;
        break;
      }
      try {
        const res = await fetch(probe, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        ready = res.status === 200;
      } catch {
        // not listening yet
      }
      if (!ready) await sleep(150);
    }
    booting = false;
    if (!ready) {
      const why = this.isRunning ? `not ready after ${readyTimeoutMs} ms` : `exited (${JSON.stringify(this.exits.at(-1))})`;
      throw new Error(`${this.name} ${why}:\n${bootLog(this.logFile, logOffset)}`);
    }
  }

  /**
   * Starts like a supervisor (systemd, Kubernetes) would: a process that dies while booting
   * is started again, up to `attempts` times. Each such death is kept in bootCrashes (with
   * the last log lines): the contract lets any number of processes start at any time, so a
   * scenario treats them as findings, but goes on to check the money invariants.
   */
  async startSupervised(attempts = 3): Promise<void> {
    for (let i = 1; ; i++) {
      try {
        await this.start();
        return;
      } catch (err) {
        const message = (err as Error).message;
        this.bootCrashes.push(message.length > 3000 ? `${message.slice(0, 3000)}...` : message);
        if (this.isRunning || i >= attempts) throw err;
        await sleep(500);
      }
    }
  }

  /** kill -9, and wait until the process is gone. */
  async kill9(): Promise<void> {
    const child = this.child;
    if (!child || !this.isRunning) return;
    this.expectingExit = true;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGKILL');
    this.kills++;
    await exited;
  }

  /** SIGTERM (graceful shutdown), SIGKILL after 10 s. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || !this.isRunning) return;
    this.expectingExit = true;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const timedOut = await Promise.race([exited.then(() => false), sleep(10_000).then(() => true)]);
    if (timedOut && this.isRunning) {
      child.kill('SIGKILL');
      await exited;
    }
  }

  logTail(lines = 30): string {
    return tail(this.logFile, lines);
  }
}

/** The first lines this boot wrote (where the error and its stack are), else the log's tail. */
function bootLog(file: string, offset: number, lines = 45): string {
  try {
    const text = fs.readFileSync(file).subarray(offset).toString('utf8');
    return text.trim() ? text.split('\n').slice(0, lines).join('\n') : tail(file);
  } catch {
    return tail(file);
  }
}

export interface Deployment {
  env: Record<string, string>;
  adminKey: string;
  queuePrefix: string;
}

/** Environment shared by every process of one scenario's deployment. */
export function deploymentEnv(opts: { databaseUrl: string; redisUrl: string; apiPort: number; extra?: Record<string, string> }): Deployment {
  const adminKey = `chaos_admin_${randomBytes(16).toString('hex')}`;
  const queuePrefix = `chaos_${randomBytes(3).toString('hex')}`;
  return {
    adminKey,
    queuePrefix,
    env: {
      NODE_ENV: 'test',
      SANDBOX: 'true',
      LOG_LEVEL: process.env.CHAOS_LOG_LEVEL ?? 'warn',
      DATABASE_URL: opts.databaseUrl,
      REDIS_URL: opts.redisUrl,
      QUEUE_PREFIX: queuePrefix,
      ADMIN_API_KEY: adminKey,
      // Every process reaches the emulators (and providers reach our webhooks) through the api process.
      SANDBOX_URL: `http://127.0.0.1:${opts.apiPort}/sandbox`,
      PUBLIC_URL: `http://127.0.0.1:${opts.apiPort}`,
      DB_POOL_SIZE: '12',
      ...CHAOS_TIMINGS,
      ...opts.extra,
    },
  };
}

/** A process of the deployment on a port of its own (chosen once, kept across restarts). */
export async function serviceProcess(name: string, role: Role, runDir: string, dep: Deployment, port?: number): Promise<ServiceProcess> {
  return new ServiceProcess(name, role, runDir, port ?? (await freePort()), dep.env);
}
