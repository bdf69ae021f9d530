import dns, { type LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';

/** Non-public address ranges a merchant URL must not reach unless allowed (SSRF guard). */
const BLOCKED = new net.BlockList();
for (const [addr, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  BLOCKED.addSubnet(addr, prefix, 'ipv4');
}
for (const [addr, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
  ['64:ff9b::', 96],
] as const) {
  BLOCKED.addSubnet(addr, prefix, 'ipv6');
}

/** Whether an IP address is loopback, private, link-local, CGNAT, multicast or reserved. */
export function isNonPublicAddress(ip: string): boolean {
  const family = net.isIP(ip);
  if (family === 4) return BLOCKED.check(ip, 'ipv4');
  if (family === 6) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
    if (mapped) return BLOCKED.check(mapped[1], 'ipv4');
    return BLOCKED.check(ip, 'ipv6');
  }
  return true;
}

/** The URL's host as an IP literal, if it is one (IPv6 without brackets). */
function ipLiteral(url: URL): string | undefined {
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return net.isIP(host) ? host : undefined;
}

/**
 * Checks a merchant URL without resolving it: http(s) only, no credentials, a host, and
 * (unless allowed) no literal non-public address or localhost. Returns a message, or
 * undefined when the URL is acceptable. Names are checked again at delivery time, on the
 * addresses they resolve to.
 */
export function webhookUrlProblem(raw: string, allowPrivate: boolean): string | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'url must be an absolute http or https URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'url must use http or https';
  if (!url.hostname) return 'url must have a host';
  if (url.username || url.password) return 'url must not contain credentials';
  if (!allowPrivate) {
    const ip = ipLiteral(url);
    if ((ip && isNonPublicAddress(ip)) || /^localhost\.?$/i.test(url.hostname) || /\.localhost\.?$/i.test(url.hostname)) {
      return 'url must point to a public address';
    }
  }
  return undefined;
}

export interface PostResult {
  /** HTTP status when the endpoint answered. */
  status?: number;
  /** Why the attempt failed (transport error, timeout, non-2xx with an excerpt of the body). */
  error?: string;
  latencyMs: number;
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** A dns lookup that drops non-public addresses, so a name cannot be pointed inward (or rebound). */
function guardedLookup(hostname: string, options: dns.LookupOptions, callback: LookupCallback): void {
  dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, '');
    const usable = (addresses as LookupAddress[]).filter((a) => !isNonPublicAddress(a.address));
    if (usable.length === 0) {
      const e: NodeJS.ErrnoException = new Error(`${hostname} resolves to no public address`);
      e.code = 'ENOTPUBLIC';
      return callback(e, '');
    }
    if (options.all) return callback(null, usable);
    return callback(null, usable[0].address, usable[0].family);
  });
}

/** At most this much of a response body is read (for the error message); the rest is dropped. */
const MAX_RESPONSE_BYTES = 2_048;

/**
 * One POST to a merchant endpoint. Redirects are never followed (a 3xx is a failure),
 * only http(s) is spoken, the whole exchange is bounded by `timeoutMs`, and `signal`
 * (shutdown) aborts it. Never throws.
 */
export function postWebhook(
  rawUrl: string,
  body: string,
  headers: Record<string, string>,
  opts: { timeoutMs: number; allowPrivateTargets: boolean; signal?: AbortSignal },
): Promise<PostResult> {
  const started = Date.now();
  const latency = () => Date.now() - started;
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    return Promise.resolve({ error: 'invalid url', latencyMs: 0 });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return Promise.resolve({ error: `refusing to send to ${url.protocol} URL`, latencyMs: 0 });
  }
  const ip = ipLiteral(url);
  if (!opts.allowPrivateTargets && ip && isNonPublicAddress(ip)) {
    return Promise.resolve({ error: `${ip} is not a public address`, latencyMs: 0 });
  }

  return new Promise<PostResult>((resolve) => {
    let settled = false;
    const finish = (r: Omit<PostResult, 'latencyMs'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      resolve({ ...r, latencyMs: latency() });
    };
    const transport = url.protocol === 'https:' ? https : http;
    const req = transport.request(url, {
      method: 'POST',
      headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
      // A fresh connection per attempt: no socket reused across endpoints or DNS answers.
      agent: false,
      ...(opts.allowPrivateTargets || ip ? {} : { lookup: guardedLookup as unknown as typeof dns.lookup }),
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${opts.timeoutMs} ms`)), opts.timeoutMs);
    const onAbort = () => req.destroy(new Error('aborted: shutting down'));
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener('abort', onAbort, { once: true });

    req.on('error', (err: NodeJS.ErrnoException) => finish({ error: err.code ? `${err.code}: ${err.message}` : err.message }));
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      const chunks: Buffer[] = [];
      let size = 0;
      const done = () => {
        const ok = status >= 200 && status < 300;
        if (ok) return finish({ status });
        const text = Buffer.concat(chunks).toString('utf8').slice(0, 200).replace(/\s+/g, ' ').trim();
        const location = status >= 300 && status < 400 && res.headers.location ? ` (redirect to ${String(res.headers.location).slice(0, 200)} not followed)` : '';
        finish({ status, error: `HTTP ${status}${location}${text ? `: ${text}` : ''}` });
      };
      res.on('data', (chunk: Buffer) => {
        if (size >= MAX_RESPONSE_BYTES) return;
        chunks.push(chunk);
        size += chunk.length;
        if (size >= MAX_RESPONSE_BYTES) {
          done();
          res.destroy();
        }
      });
      res.on('end', done);
      res.on('error', () => done());
    });
    req.end(body);
  });
}
