/** Minimal JSON over HTTP for the chaos suite (global fetch, every call bounded). */

export interface HttpResult {
  status: number;
  headers: Headers;
  body: any;
  ms: number;
}

export class NetworkError extends Error {}

export async function http(
  method: string,
  url: string,
  opts: { headers?: Record<string, string>; body?: unknown; timeoutMs?: number; /** Sent as is (JSON text), instead of `body`. */ rawBody?: string } = {},
): Promise<HttpResult> {
  const started = Date.now();
  let res: Response;
  const hasBody = opts.body !== undefined || opts.rawBody !== undefined;
  try {
    res = await fetch(url, {
      method,
      headers: { ...(hasBody ? { 'content-type': 'application/json' } : {}), ...opts.headers },
      body: opts.rawBody ?? (opts.body !== undefined ? JSON.stringify(opts.body) : undefined),
      signal: AbortSignal.timeout(opts.timeoutMs ?? 15_000),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new NetworkError(`${method} ${url}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
  }
  let text: string;
  try {
    text = await res.text();
  } catch (err) {
    throw new NetworkError(`${method} ${url}: body cut off (${(err as Error).message})`);
  }
  let body: unknown = text;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
  }
  return { status: res.status, headers: res.headers, body, ms: Date.now() - started };
}

/** Like http(), but throws unless the status is the expected one. */
export async function expectStatus(expected: number, method: string, url: string, opts: Parameters<typeof http>[2] = {}): Promise<HttpResult> {
  const res = await http(method, url, opts);
  if (res.status !== expected) {
    throw new Error(`${method} ${url}: expected ${expected}, got ${res.status} ${JSON.stringify(res.body).slice(0, 500)}`);
  }
  return res;
}

/** Runs fn over items with at most `limit` in flight. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  });
  await Promise.all(workers);
  return out;
}
