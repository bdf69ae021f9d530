import type request from 'supertest';

// Reading a process's /metrics in tests: one parser of the Prometheus text format for every
// e2e file, so each counts samples by name and labels instead of matching lines by hand.

export type Labels = Record<string, string>;
export interface Sample {
  name: string;
  labels: Labels;
  value: number;
}

/** Parses the Prometheus text format (enough of it for these tests); throws on a line it cannot read. */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable metrics line: ${line}`);
    const labels: Labels = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** Whether a sample matches `name` and has every one of `labels`. */
function matches(s: Sample, name: string, labels: Labels): boolean {
  return s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v);
}

/** Sum of the samples of `name` whose labels include `labels` (0 when there are none). */
export function metricSum(samples: Sample[], name: string, labels: Labels = {}): number {
  return samples.filter((s) => matches(s, name, labels)).reduce((acc, s) => acc + s.value, 0);
}

export function hasMetric(samples: Sample[], name: string, labels: Labels = {}): boolean {
  return samples.some((s) => matches(s, name, labels));
}

/**
 * Of a batch-size histogram (`refund_worker_batch_size`, `refund_create_batch_size`): the
 * batches observed with `labels`, and those of more than one item (all but the `le="1"` bucket).
 */
export function batchCounts(samples: Sample[], histogram: string, labels: Labels = {}): { all: number; multi: number } {
  const all = metricSum(samples, `${histogram}_count`, labels);
  return { all, multi: all - metricSum(samples, `${histogram}_bucket`, { ...labels, le: '1' }) };
}

/** The samples of one process, from its GET /metrics (public in tests). */
export async function scrapeMetrics(http: () => ReturnType<typeof request>): Promise<Sample[]> {
  return parseMetrics((await http().get('/metrics').expect(200)).text);
}

/** The samples of several processes, together (sums add across them). */
export async function scrapeAll(processes: Array<() => ReturnType<typeof request>>): Promise<Sample[]> {
  return (await Promise.all(processes.map(scrapeMetrics))).flat();
}
