import type { INestApplication } from '@nestjs/common';
import type { FastifyInstance } from 'fastify';
import { servedRoutes } from '../src/common/served-routes.js';
import { Validator } from '@seriousme/openapi-schema-validator';
import { randomBytes } from 'node:crypto';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../src/common/problem.js';
import { AppConfig } from '../src/config/config.js';
import { REDIS_URL, startService, TestService } from './support/service.js';

/**
 * GET /docs and /docs-json (refunds-api.md §10): the OpenAPI document must describe every
 * route the running application registers, be valid OpenAPI 3, document the errors of
 * every operation, and hold no secret of the deployment that serves it.
 */

// Secrets of this deployment: none of them may appear in the document.
const ADMIN_API_KEY = `adm_${randomBytes(24).toString('base64url')}`;
const METRICS_TOKEN = `mtk_${randomBytes(24).toString('base64url')}`;

let svc: TestService;
let doc: OpenApiDoc;
let docText: string;

interface Operation {
  operationId?: string;
  security?: Array<Record<string, string[]>>;
  parameters?: Array<{ name: string; in: string; required?: boolean; $ref?: string }>;
  requestBody?: unknown;
  responses: Record<string, { description?: string; content?: Record<string, { examples?: Record<string, { value: { code?: string } }>; example?: { code?: string } }> }>;
}
type PathItem = Partial<Record<'get' | 'post' | 'put' | 'patch' | 'delete', Operation>>;
interface OpenApiDoc {
  openapi: string;
  paths: Record<string, PathItem>;
  components: { schemas: Record<string, unknown>; securitySchemes: Record<string, { type: string; scheme?: string }> };
}

beforeAll(async () => {
  svc = await startService('openapi', { ADMIN_API_KEY, METRICS_TOKEN });
  const res = await request(svc.url).get('/docs-json').expect(200);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  docText = res.text;
  doc = JSON.parse(docText) as OpenApiDoc;
});

afterAll(async () => {
  await svc?.stop();
});

/**
 * Registered routes deliberately not in the document, each for a reason:
 * - /sandbox/...: the provider emulators (SANDBOX=true only, never in production); they
 *   speak Binance's, Cobo's and Lean's protocols, not ours.
 * - /docs/<file>: Swagger UI's own files (index.html, swagger-ui-init.js, LICENSE), served
 *   by SwaggerModule around GET /docs, which is documented.
 * - /console, /console/*path: the ops console, a static single-page app (HTML, scripts)
 *   for browsers; everything it shows comes from the documented /v1 routes.
 * - /ops/queues, /ops/queues/...: Bull Board, the queue dashboard (its page, its assets and
 *   the JSON its page reads), a UI for ops behind its own key check, not part of our API.
 */
const UNDOCUMENTED = [/^\/sandbox\//, /^\/docs\/.+/, /^\/console(\/|$)/, /^\/ops\/queues(\/|$)/];

/** Method and path of every route the app serves (Fastify's onRoute, src/common/served-routes.ts). */
function registeredRoutes(app: INestApplication): string[] {
  const routes = servedRoutes(app.getHttpAdapter().getInstance() as FastifyInstance);
  return [...new Set(routes.map((r) => `${r.method} ${toOpenApiPath(r.url)}`))].sort();
}
function toOpenApiPath(path: string): string {
  return (path.replace(/:([A-Za-z0-9_]+)/g, '{$1}').replace(/\/+$/, '') || '/').replace(/^([^/])/, '/$1');
}

function operations(): Array<[string, string, Operation]> {
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.entries(item).map(([method, op]) => [method.toUpperCase(), path, op as Operation] as [string, string, Operation]),
  );
}

function documentedRoutes(): string[] {
  return operations().map(([m, p]) => `${m} ${p}`).sort();
}

/** Codes of the problem+json examples of one response. */
function problemCodes(op: Operation, status: string): string[] {
  const content = op.responses[status]?.content?.['application/problem+json'];
  if (!content) return [];
  const examples = Object.values(content.examples ?? {}).map((e) => e.value.code);
  if (content.example?.code) examples.push(content.example.code);
  return examples.filter((c): c is string => typeof c === 'string');
}

const isSecured = (op: Operation) => (op.security ?? []).some((s) => 'apiKey' in s);

describe('GET /docs and /docs-json', () => {
  it('are public: the UI and the document need no API key', async () => {
    const ui = await request(svc.url).get('/docs').expect(200);
    expect(ui.headers['content-type']).toMatch(/^text\/html/);
    expect(ui.text).toContain('swagger-ui');
    // The UI loads its init script (which embeds the document) without a key as well.
    await request(svc.url).get('/docs/swagger-ui-init.js').expect(200);
    const bundle = await request(svc.url).get('/docs/swagger-ui-bundle.js').expect(200);
    expect(bundle.headers['content-type']).toMatch(/javascript/);
    expect(doc.openapi).toMatch(/^3\./);
  });

  it('documents every route the application registers, and nothing that does not exist', () => {
    const registered = registeredRoutes(svc.app);
    // The enumeration itself works: /v1 routes, the MCP endpoint and the docs are all seen.
    expect(registered).toEqual(expect.arrayContaining(['POST /v1/refunds', 'GET /v1/refunds/{id}', 'POST /mcp', 'GET /docs-json']));
    expect(registered.length).toBeGreaterThan(40);
    const mustBeDocumented = registered.filter((r) => !UNDOCUMENTED.some((re) => re.test(r.split(' ')[1])));
    const documented = documentedRoutes();
    expect(mustBeDocumented.filter((r) => !documented.includes(r)), 'registered routes missing from /docs-json').toEqual([]);
    expect(documented.filter((r) => !registered.includes(r)), 'documented routes that are not registered').toEqual([]);
    // Provider webhook receivers are documented (as public, signature-authenticated routes).
    expect(documented).toEqual(expect.arrayContaining(['POST /webhooks/binance-pay', 'POST /webhooks/cobo', 'POST /webhooks/lean']));
    expect(documented.some((r) => r.includes('/sandbox'))).toBe(false);
  });

  it('is a valid OpenAPI 3 document whose every $ref resolves', async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc) as unknown as Parameters<Validator['validate']>[0]);
    expect(result.errors ?? [], JSON.stringify(result.errors, null, 1)?.slice(0, 2000)).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toMatch(/^3\./);

    const refs = new Set<string>();
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') {
        for (const [k, x] of Object.entries(v)) {
          if (k === '$ref' && typeof x === 'string') refs.add(x);
          else walk(x);
        }
      }
    };
    walk(doc);
    expect(refs.size).toBeGreaterThan(10);
    const unresolved = [...refs].filter((r) => {
      const m = /^#\/components\/schemas\/(.+)$/.exec(r);
      return !m || !(m[1] in doc.components.schemas);
    });
    expect(unresolved).toEqual([]);
  });

  it('describes every operation: a summary, an operation id, a success response', () => {
    for (const [method, path, op] of operations()) {
      const what = `${method} ${path}`;
      expect(op.operationId, what).toBeTruthy();
      expect((op as { summary?: string }).summary, what).toBeTruthy();
      const ok = Object.keys(op.responses).filter((s) => /^[23]\d\d$/.test(s));
      const expected = path === '/mcp' && method !== 'POST' ? ['405'] : ok;
      expect(expected.length, `${what} has no success response`).toBeGreaterThan(0);
    }
  });

  it('documents the errors of every operation as problem+json with stable codes', () => {
    const problemSchema = doc.components.schemas.Problem as { properties: { code: { enum: string[] } } };
    expect(problemSchema.properties.code.enum).toEqual(expect.arrayContaining(Object.keys(ERROR_CODES)));
    expect(doc.components.securitySchemes.apiKey).toMatchObject({ type: 'http', scheme: 'bearer' });

    const secured = operations().filter(([, , op]) => isSecured(op));
    expect(secured.length).toBeGreaterThan(30);
    for (const [method, path, op] of operations()) {
      const what = `${method} ${path}`;
      const isPublic = /^\/(health|metrics|webhooks|docs)/.test(path);
      expect(isSecured(op), `${what}: every route outside the public prefixes takes the API key`).toBe(!isPublic);
      for (const status of Object.keys(op.responses).filter((s) => /^[45]\d\d$/.test(s))) {
        const codes = problemCodes(op, status);
        if (path === '/metrics' || path === '/health/ready') continue; // not problem bodies (Prometheus, Terminus)
        expect(codes.length, `${what} ${status} has no problem example`).toBeGreaterThan(0);
        for (const code of codes) {
          const expected = code === 'method_not_allowed' ? 405 : ERROR_CODES[code as keyof typeof ERROR_CODES]?.status;
          expect(String(expected), `${what}: code ${code} documented under ${status}`).toBe(status);
        }
      }
      if (isSecured(op)) {
        expect(problemCodes(op, '401'), `${what} 401`).toContain('unauthorized');
        expect(problemCodes(op, '403'), `${what} 403`).toContain('forbidden');
        expect(problemCodes(op, '429'), `${what} 429`).toContain('rate_limited');
      }
      if (path.startsWith('/webhooks/')) expect(problemCodes(op, '401'), `${what}: bad signature`).toContain('unauthorized');
      if (op.requestBody && path !== '/mcp' && !path.startsWith('/webhooks/')) {
        expect(problemCodes(op, '400'), `${what}: JSON body`).toContain('validation_failed');
        expect(problemCodes(op, '415'), `${what}: JSON only`).toContain('unsupported_media_type');
      }
      if ((op.parameters ?? []).some((p) => p.in === 'query')) {
        expect(problemCodes(op, '400'), `${what}: query string`).toContain('validation_failed');
      }
      // A resource addressed by id can be missing (PUT /v1/merchants/{id} creates instead).
      if (/\{[^}]+\}/.test(path) && method !== 'PUT') {
        expect([...problemCodes(op, '404')].some((c) => c === 'not_found' || c === 'payment_not_found'), `${what}: 404`).toBe(true);
      }
    }

    const create = doc.paths['/v1/refunds'].post!;
    expect(problemCodes(create, '400')).toEqual(expect.arrayContaining(['validation_failed', 'idempotency_key_required']));
    expect(problemCodes(create, '409')).toEqual(['idempotency_key_reused']);
    expect(problemCodes(create, '422').sort()).toEqual(
      ['amount_exceeds_refundable', 'currency_mismatch', 'payment_not_refundable', 'provider_not_configured'].sort(),
    );
    expect(problemCodes(create, '404')).toEqual(['payment_not_found']);
    expect(Object.keys(create.responses)).toEqual(expect.arrayContaining(['200', '202']));
    expect(create.parameters).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'Idempotency-Key', in: 'header', required: true })]));
    // Unknown members are refused (400), and the schema says so.
    expect(doc.components.schemas.CreateRefundDto).toMatchObject({ additionalProperties: false, required: ['provider', 'paymentId', 'amount', 'currency'] });
    expect(problemCodes(doc.paths['/v1/refunds/{id}/cancel'].post!, '409')).toEqual(['invalid_state']);
    expect(problemCodes(doc.paths['/v1/refunds/{id}/retry'].post!, '409')).toEqual(['invalid_state']);
  });

  it('says the truth about authentication: every operation it marks as secured answers 401 without a key', async () => {
    for (const [method, path, op] of operations().filter(([, , o]) => isSecured(o))) {
      const url = path.replace(/\{[^}]+\}/g, '00000000-0000-4000-8000-000000000000');
      const res = await request(svc.url)[method.toLowerCase() as 'get'](url).send(method === 'GET' ? undefined : {});
      expect(res.status, `${method} ${path}: ${res.text.slice(0, 200)}`).toBe(401);
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(res.body.code).toBe('unauthorized');
    }
  });

  it('holds no secret of the deployment (keys, tokens, credentials, connection strings)', async () => {
    // An API key created now must not leak into the (already built, cached) document either.
    const created = await request(svc.url)
      .post('/v1/api-keys')
      .set('Authorization', `Bearer ${ADMIN_API_KEY}`)
      .send({ role: 'merchant', merchantId: 'MDOCS1', name: 'docs' })
      .expect(201);
    const cfg = svc.app.get(AppConfig);
    const secrets = new Set<string>([ADMIN_API_KEY, METRICS_TOKEN, created.body.key, svc.databaseUrl, REDIS_URL, svc.queuePrefix]);
    const collect = (v: unknown, key = ''): void => {
      if (typeof v === 'string' && v.length >= 8 && /key|secret|token|password|credential|url/i.test(key)) secrets.add(v);
      else if (Buffer.isBuffer(v)) secrets.add(v.toString('hex'));
      else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) collect(x, k);
    };
    collect(cfg);
    expect(secrets.has(ADMIN_API_KEY)).toBe(true);
    expect(cfg.adminApiKey).toBe(ADMIN_API_KEY); // the config the test reads is the one the service uses
    expect(secrets.size).toBeGreaterThanOrEqual(6);

    const init = await request(svc.url).get('/docs/swagger-ui-init.js').expect(200);
    const again = await request(svc.url).get('/docs-json').expect(200);
    for (const text of [docText, again.text, init.text]) {
      for (const s of secrets) expect(text.includes(s), `the document contains ${s.slice(0, 6)}…`).toBe(false);
      // Nor the bootstrap sandbox key, nor anything shaped like a real API key or webhook secret.
      expect(text).not.toContain('sandbox_admin_key_local_only');
      expect(text).not.toMatch(/rk_(merchant|ops|finance|admin)_[A-Za-z0-9_-]{43}/);
      expect(text).not.toMatch(/whsec_[A-Za-z0-9_-]{43}/);
    }
  });
});
