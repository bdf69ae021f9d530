import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { RUN_DIR_ENV, onCleanup, pdeathsigPrefix, pollUntil, recordChild, tail } from './harness.js';
import { freePort } from './ports.js';

/** Sends one inline command over RESP and returns the first reply line (no client library retries). */
export function redisCommand(port: number, command: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`redis ${command}: no answer in ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('connect', () => sock.write(`${command}\r\n`));
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\r\n');
      if (nl >= 0) {
        clearTimeout(timer);
        sock.end();
        resolve(buf.slice(0, nl));
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * A redis-server of our own on 127.0.0.1:<spare port>, no persistence (a restart comes
 * back empty, like a crashed cache node without AOF). Killed with SIGKILL and started again
 * on the same port by the Redis scenario.
 */
export class RedisServer {
  private child?: ChildProcess;
  readonly logFile: string;
  starts = 0;

  private constructor(
    private readonly runDir: string,
    readonly port: number,
  ) {
    this.logFile = path.join(runDir, 'redis.log');
  }

  static async create(runDir: string): Promise<RedisServer> {
    const server = new RedisServer(runDir, await freePort());
    onCleanup(
      `redis ${server.port}`,
      async () => server.kill(),
      () => server.child?.pid && !server.child.killed && process.kill(server.child.pid, 'SIGKILL'),
    );
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get isRunning(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(): Promise<void> {
    if (this.isRunning) return;
    const fd = fs.openSync(this.logFile, 'a');
    const argv = [
      ...pdeathsigPrefix(),
      'redis-server',
      '--port', String(this.port),
      '--bind', '127.0.0.1',
      '--save', '',
      '--appendonly', 'no',
      '--dir', this.runDir,
      '--daemonize', 'no',
    ];
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', fd, fd],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', [RUN_DIR_ENV]: this.runDir },
    });
    fs.closeSync(fd);
    this.child = child;
    this.starts++;
    if (child.pid) recordChild(this.runDir, child.pid);
    const ok = await pollUntil(async () => (await redisCommand(this.port, 'PING', 500)) === '+PONG', 20_000, 100);
    if (!ok) throw new Error(`redis-server on ${this.port} did not start:\n${tail(this.logFile)}`);
  }

  /** SIGKILL, and wait until the process is gone (the port is free again). */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || !this.isRunning) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGKILL');
    await exited;
  }

  async flushAll(): Promise<void> {
    const reply = await redisCommand(this.port, 'FLUSHALL');
    if (reply !== '+OK') throw new Error(`FLUSHALL answered ${reply}`);
  }

  async dbSize(): Promise<number> {
    const reply = await redisCommand(this.port, 'DBSIZE');
    return Number(reply.replace(/^:/, ''));
  }
}

/**
 * A Redis Cluster of our own: `size` masters (no replicas) on spare ports of 127.0.0.1, each
 * with its cluster bus on another spare port (`cluster-port`), formed with
 * `redis-cli --cluster create`, no persistence. For the service with REDIS_CLUSTER=true.
 */
export class RedisClusterNodes {
  private readonly children: ChildProcess[] = [];

  private constructor(
    private readonly runDir: string,
    readonly ports: number[],
    private readonly busPorts: number[],
  ) {}

  static async create(runDir: string, size = 3): Promise<RedisClusterNodes> {
    const ports: number[] = [];
    const busPorts: number[] = [];
    for (let i = 0; i < size; i++) {
      ports.push(await freePort());
      busPorts.push(await freePort());
    }
    const nodes = new RedisClusterNodes(runDir, ports, busPorts);
    onCleanup(
      `redis cluster ${ports.join(',')}`,
      async () => nodes.kill(),
      () => nodes.children.forEach((c) => c.pid && c.exitCode === null && process.kill(c.pid, 'SIGKILL')),
    );
    return nodes;
  }

  /** The seed node's URL (any node would do: the client learns the others). */
  get url(): string {
    return `redis://127.0.0.1:${this.ports[0]}`;
  }

  logFile(port: number): string {
    return path.join(this.runDir, `redis-cluster-${port}.log`);
  }

  /** Starts every node, forms the cluster and waits until every node sees all of it. */
  async start(): Promise<void> {
    for (const i of this.ports.keys()) await this.startNode(i);
    const create = spawnSync(
      'redis-cli',
      ['--cluster', 'create', ...this.ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'],
      { encoding: 'utf8', timeout: 30_000 },
    );
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed (${create.status}):\n${create.stdout}\n${create.stderr}`);
    // Every node must see the whole cluster before clients are pointed at it.
    for (const port of this.ports) {
      const ok = await pollUntil(async () => {
        const info = spawnSync('redis-cli', ['-p', String(port), 'CLUSTER', 'INFO'], { encoding: 'utf8', timeout: 5_000 }).stdout ?? '';
        return /cluster_state:ok/.test(info) && new RegExp(`cluster_known_nodes:${this.ports.length}\\b`).test(info);
      }, 30_000, 200);
      if (!ok) throw new Error(`redis cluster node ${port} did not reach cluster_state:ok:\n${tail(this.logFile(port))}`);
    }
  }

  /**
   * Starts node i (again): its nodes.conf stays in its directory, so a restarted node comes
   * back with its identity and slots and rejoins the cluster by itself.
   */
  async startNode(i: number): Promise<void> {
    const port = this.ports[i]!;
    const dir = path.join(this.runDir, `redis-cluster-${port}`);
    fs.mkdirSync(dir, { recursive: true });
    const fd = fs.openSync(this.logFile(port), 'a');
    const argv = [
      ...pdeathsigPrefix(),
      'redis-server',
      '--port', String(port),
      '--bind', '127.0.0.1',
      '--cluster-enabled', 'yes',
      '--cluster-port', String(this.busPorts[i]),
      '--cluster-config-file', 'nodes.conf',
      '--cluster-node-timeout', '3000',
      '--save', '',
      '--appendonly', 'no',
      '--dir', dir,
      '--daemonize', 'no',
    ];
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', fd, fd],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', [RUN_DIR_ENV]: this.runDir },
    });
    fs.closeSync(fd);
    this.children[i] = child;
    if (child.pid) recordChild(this.runDir, child.pid);
    const ok = await pollUntil(async () => (await redisCommand(port, 'PING', 500).catch(() => '')) === '+PONG', 20_000, 100);
    if (!ok) throw new Error(`redis-server (cluster) on ${port} did not start:\n${tail(this.logFile(port))}`);
  }

  /** SIGKILL of node i (the others mark the cluster failed after the node timeout, 3 s). */
  async killNode(i: number): Promise<void> {
    const child = this.children[i];
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGKILL');
    await exited;
  }

  /** `cluster_state` as node i reports it ('ok' or 'fail'). */
  clusterState(i: number): string {
    const info = spawnSync('redis-cli', ['-p', String(this.ports[i]), 'CLUSTER', 'INFO'], { encoding: 'utf8', timeout: 5_000 }).stdout ?? '';
    return /cluster_state:(\w+)/.exec(info)?.[1] ?? 'unreachable';
  }

  async kill(): Promise<void> {
    await Promise.all(
      this.children.map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((r) => child.once('exit', () => r()));
        child.kill('SIGKILL');
        await exited;
      }),
    );
  }
}
