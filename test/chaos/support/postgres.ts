import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { onCleanup, pollUntil } from './harness.js';
import { freePort } from './ports.js';

const execFileAsync = promisify(execFile);

/** Directory of initdb/pg_ctl: CHAOS_PG_BIN, else the newest /usr/lib/postgresql/N/bin, else PATH. */
export function pgBinDir(): string {
  if (process.env.CHAOS_PG_BIN) return process.env.CHAOS_PG_BIN;
  const root = '/usr/lib/postgresql';
  try {
    const versions = fs
      .readdirSync(root)
      .filter((v) => /^\d+$/.test(v) && fs.existsSync(path.join(root, v, 'bin', 'pg_ctl')))
      .sort((a, b) => Number(b) - Number(a));
    if (versions.length) return path.join(root, versions[0]!, 'bin');
  } catch {
    // not Debian's layout
  }
  return '';
}

/** Postgres refuses to run as root: then its tools run as the `postgres` user (runuser). */
function asPgUser(bin: string, args: string[]): [string, string[]] {
  const exe = pgBinDir() ? path.join(pgBinDir(), bin) : bin;
  if (process.getuid?.() === 0) return ['runuser', ['-u', 'postgres', '--', exe, ...args]];
  return [exe, args];
}

async function pgTool(bin: string, args: string[], timeoutMs = 90_000): Promise<string> {
  const [cmd, argv] = asPgUser(bin, args);
  try {
    const { stdout } = await execFileAsync(cmd, argv, { timeout: timeoutMs, encoding: 'utf8' });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${bin} ${args.join(' ')} failed: ${e.message}\n${e.stderr ?? ''}${e.stdout ?? ''}`);
  }
}

/** Synchronous pg_ctl, for exit hooks and leftovers of killed runs. */
export function pgCtlSync(args: string[]): void {
  const [cmd, argv] = asPgUser('pg_ctl', args);
  spawnSync(cmd, argv, { stdio: 'ignore', timeout: 30_000 });
}

/**
 * A throw-away Postgres cluster of our own: initdb in the run dir, trust auth, listening
 * on 127.0.0.1:<spare port> only (socket in the run dir too), fsync off (we never crash the
 * machine, only stop Postgres cleanly or kill processes). Never touches the shared cluster.
 */
export class PgCluster {
  readonly dataDir: string;
  readonly logFile: string;
  private running = false;

  private constructor(
    readonly root: string,
    readonly port: number,
  ) {
    this.dataDir = path.join(root, 'data');
    this.logFile = path.join(root, 'postgres.log');
  }

  static async create(runDir: string): Promise<PgCluster> {
    const root = path.join(runDir, 'pg');
    fs.mkdirSync(root, { recursive: true });
    if (process.getuid?.() === 0) {
      const ids = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
      const gids = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
      if (ids.status !== 0) throw new Error('running as root needs a "postgres" user to run the chaos Postgres cluster');
      fs.chownSync(root, Number(ids.stdout.trim()), Number(gids.stdout.trim()));
    }
    const cluster = new PgCluster(root, await freePort());
    await pgTool('initdb', ['-D', cluster.dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync']);
    onCleanup(
      `postgres ${cluster.port}`,
      async () => {
        if (cluster.running) await cluster.stop('immediate');
      },
      () => pgCtlSync(['stop', '-D', cluster.dataDir, '-m', 'immediate', '-w', '-t', '20']),
    );
    return cluster;
  }

  get isRunning(): boolean {
    return this.running;
  }

  url(database = 'postgres'): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  async start(): Promise<void> {
    const opts = [
      `-p ${this.port}`,
      `-c listen_addresses=127.0.0.1`,
      `-c unix_socket_directories=${this.root}`,
      `-c max_connections=400`,
      `-c fsync=off`,
      `-c full_page_writes=off`,
      `-c shared_buffers=64MB`,
    ].join(' ');
    await pgTool('pg_ctl', ['start', '-D', this.dataDir, '-l', this.logFile, '-w', '-t', '60', '-o', opts]);
    this.running = true;
    const ok = await pollUntil(async () => {
      const c = new pg.Client({ connectionString: this.url(), connectionTimeoutMillis: 1000 });
      try {
        await c.connect();
        await c.query('SELECT 1');
        return true;
      } finally {
        await c.end().catch(() => undefined);
      }
    }, 30_000);
    if (!ok) throw new Error(`postgres on ${this.port} did not accept connections`);
  }

  /** `pg_ctl stop -m fast` (terminates sessions, clean shutdown) or `immediate`. */
  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await pgTool('pg_ctl', ['stop', '-D', this.dataDir, '-m', mode, '-w', '-t', '60']);
    this.running = false;
  }

  async createDatabase(name: string): Promise<string> {
    const c = new pg.Client({ connectionString: this.url() });
    await c.connect();
    try {
      await c.query(`CREATE DATABASE "${name}"`);
    } finally {
      await c.end();
    }
    return this.url(name);
  }
}
