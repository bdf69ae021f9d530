// Summarises V8 .cpuprofile files (from `BENCH_CPU_PROF=1 npm run bench` or `node --cpu-prof`):
// self time by function and by package, and inclusive time of chosen frames; and .heapprofile
// files (from `BENCH_HEAP_PROF=1 npm run bench`): bytes allocated by function and by package, and
// by the innermost frame of the service's own code on the stack (which of our calls allocates).
//
//   node dist/bench/bench/profile-summary.js <file.cpuprofile|file.heapprofile> [top=30]
import fs from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

function pkgOf(url: string): string {
  if (!url) return '(native/gc/idle)';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1]!;
  if (url.startsWith('node:')) return 'node:' + url.slice(5).split('/')[0];
  // A build in dist/, or the copy the bench runs the service from (<run dir>/service/src).
  const s = /\/(?:dist\/(?:bench\/)?|service\/)src\/([^/]+)/.exec(url);
  if (s) return `src/${s[1]}`;
  return url.replace(/^file:\/\//, '').split('/').slice(-2).join('/');
}

export function summarise(file: string, top = 30): string {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  // Self time per node from samples and time deltas (microseconds).
  const self = new Map<number, number>();
  if (p.samples && p.timeDeltas) {
    for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i + 1] ?? 0));
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0) || 1;
  const byFn = new Map<string, number>();
  const byPkg = new Map<string, number>();
  let idle = 0;
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const name = n.callFrame.functionName || '(anonymous)';
    if (name === '(idle)') idle += us;
    const key = `${name} ${pkgOf(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
    byFn.set(key, (byFn.get(key) ?? 0) + us);
    const pkg = name.startsWith('(') ? name : pkgOf(n.callFrame.url);
    byPkg.set(pkg, (byPkg.get(pkg) ?? 0) + us);
  }
  const busy = total - idle;
  // Inclusive time per package: a sample counts once for every package on its stack.
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, number>();
  for (const [id, us] of self) {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur)!;
      if (!n.callFrame.url) continue;
      seen.add(pkgOf(n.callFrame.url));
    }
    for (const k of seen) incl.set(k, (incl.get(k) ?? 0) + us);
  }
  const pct = (us: number) => `${((100 * us) / busy).toFixed(1).padStart(5)}%`;
  const lines = [
    `${file}: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s busy (${((100 * busy) / total).toFixed(0)}%); shares of busy time`,
    '',
    'self time by package:',
    ...[...byPkg].filter(([k]) => k !== '(idle)').sort((a, b) => b[1] - a[1]).slice(0, 20).map(([k, v]) => `  ${pct(v)}  ${k}`),
    '',
    'inclusive time by package (a frame of it anywhere on the stack):',
    ...[...incl].sort((a, b) => b[1] - a[1]).slice(0, 25).map(([k, v]) => `  ${pct(v)}  ${k}`),
    '',
    'self time by function:',
    ...[...byFn].filter(([k]) => !k.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => `  ${pct(v)}  ${k}`),
  ];
  return lines.join('\n');
}

interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}

/** The service's own code (src/ of a build), as opposed to node_modules and Node's internals. */
const ownCode = (url: string) => /\/(?:dist\/(?:bench\/)?|service\/)src\//.test(url) && !url.includes('node_modules');

export function summariseHeap(file: string, top = 30): string {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as { head: HeapNode };
  const byFn = new Map<string, number>();
  const byPkg = new Map<string, number>();
  const byOwn = new Map<string, number>();
  const incl = new Map<string, number>();
  let total = 0;
  const frameKey = (n: HeapNode) => `${n.callFrame.functionName || '(anonymous)'} ${pkgOf(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  // Depth first with the stack, so every allocation is also charged to each package on its
  // stack once (inclusive) and to the innermost frame of our own code.
  const walk = (n: HeapNode, stack: HeapNode[]) => {
    stack.push(n);
    if (n.selfSize > 0) {
      total += n.selfSize;
      add(byFn, frameKey(n), n.selfSize);
      const name = n.callFrame.functionName;
      add(byPkg, name.startsWith('(') && !n.callFrame.url ? name : pkgOf(n.callFrame.url), n.selfSize);
      const seen = new Set<string>();
      for (const f of stack) if (f.callFrame.url) seen.add(pkgOf(f.callFrame.url));
      for (const k of seen) add(incl, k, n.selfSize);
      let own: HeapNode | undefined;
      for (let i = stack.length - 1; i >= 0 && !own; i--) if (ownCode(stack[i]!.callFrame.url)) own = stack[i];
      add(byOwn, own ? frameKey(own) : '(no frame of the service on the stack)', n.selfSize);
    }
    for (const c of n.children) walk(c, stack);
    stack.pop();
  };
  walk(p.head, []);
  const pct = (b: number) => `${((100 * b) / (total || 1)).toFixed(1).padStart(5)}%`;
  const list = (m: Map<string, number>, n: number) =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `  ${pct(v)}  ${(v / 1e6).toFixed(1).padStart(8)} MB  ${k}`);
  return [
    `${file}: ${(total / 1e6).toFixed(1)} MB allocated (sampled, collected objects included); shares of it`,
    '',
    'allocated by package (self):',
    ...list(byPkg, 20),
    '',
    'allocated under package (a frame of it anywhere on the stack):',
    ...list(incl, 25),
    '',
    'allocated by function (self):',
    ...list(byFn, top),
    '',
    'allocated under the innermost frame of the service (src/):',
    ...list(byOwn, top),
  ].join('\n');
}

if (process.argv[1] && /profile-summary\.js$/.test(process.argv[1])) {
  const [file, top] = process.argv.slice(2);
  if (!file) {
    process.stderr.write('usage: node dist/bench/bench/profile-summary.js <file.cpuprofile|file.heapprofile> [top]\n');
    process.exit(2);
  }
  const summary = file.endsWith('.heapprofile') ? summariseHeap : summarise;
  process.stdout.write(summary(file, top ? Number(top) : 30) + '\n');
}
