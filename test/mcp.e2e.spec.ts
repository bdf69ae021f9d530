import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { merchantKey, roleKey, sandboxPayment, setFaults, startService, TestService, waitFor } from './support/service.js';

/**
 * POST /mcp (refunds-api.md §10) driven by the MCP SDK's own Client over streamable HTTP,
 * against the real service (Postgres, Redis, the sandbox Binance Pay).
 */

let svc: TestService;
const keys = {} as Record<'m1' | 'm2' | 'ops' | 'finance' | 'admin', string>;
const clients: Client[] = [];
const mcp = {} as Record<keyof typeof keys, Client>;

async function connect(key: string | undefined): Promise<Client> {
  const client = new Client({ name: 'mcp-e2e', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(`${svc.url}/mcp`), {
    requestInit: { headers: key === undefined ? {} : { Authorization: `Bearer ${key}` } },
  });
  await client.connect(transport);
  clients.push(client);
  return client;
}

async function call(client: Client, name: string, args: Record<string, unknown>) {
  return (await client.callTool({ name, arguments: args })) as CallToolResult;
}

/** A successful tool result's payload; fails with the problem otherwise. */
async function ok(client: Client, name: string, args: Record<string, unknown>): Promise<Record<string, any>> {
  const res = await call(client, name, args);
  expect(res.isError ?? false, `${name}: ${JSON.stringify(res.content)}`).toBe(false);
  const text = (res.content[0] as { type: 'text'; text: string }).text;
  expect(JSON.parse(text)).toEqual(res.structuredContent);
  return res.structuredContent as Record<string, any>;
}

/** A tool error: `isError` with the RFC 9457 problem, in the text content and as structured content. */
async function problem(client: Client, name: string, args: Record<string, unknown>): Promise<Record<string, any>> {
  const res = await call(client, name, args);
  expect(res.isError, `${name} should fail: ${JSON.stringify(res.content)}`).toBe(true);
  const body = JSON.parse((res.content[0] as { type: 'text'; text: string }).text);
  expect(body).toMatchObject({ type: 'about:blank', instance: '/mcp' });
  expect(typeof body.code).toBe('string');
  expect(res.structuredContent).toEqual(body);
  return body;
}

function createArgs(paymentId: string, amount: string, key = randomUUID()) {
  return { idempotency_key: key, provider: 'binance_pay', paymentId, amount, currency: 'USDT', reason: 'requested_by_customer' };
}

beforeAll(async () => {
  svc = await startService('mcp');
  keys.m1 = await merchantKey(svc, 'MMCP1');
  keys.m2 = await merchantKey(svc, 'MMCP2');
  keys.ops = await roleKey(svc, 'ops');
  keys.finance = await roleKey(svc, 'finance');
  keys.admin = await roleKey(svc, 'admin');
  // Refunds of 100 USDT or more wait for approval: they stay cancelable as long as we need.
  await svc
    .http()
    .put('/v1/merchants/MMCP1')
    .set('Authorization', `Bearer ${svc.adminKey}`)
    .send({ name: 'MCP merchant', approvalThresholds: { USDT: '100' } })
    .expect(200);
  for (const k of Object.keys(keys) as Array<keyof typeof keys>) mcp[k] = await connect(keys[k]);
});

afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  await svc?.stop();
});

describe('MCP tools', () => {
  it('lists the five tools with strict input schemas and honest annotations', async () => {
    const { tools } = await mcp.m1.listTools();
    const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
    expect(Object.keys(byName).sort()).toEqual(['cancel-refund', 'create-refund', 'get-refund', 'list-refunds', 'retry-refund']);

    const create = byName['create-refund'];
    expect(create.inputSchema.type).toBe('object');
    expect(create.inputSchema.additionalProperties).toBe(false);
    expect([...(create.inputSchema.required ?? [])].sort()).toEqual(['amount', 'currency', 'idempotency_key', 'paymentId', 'provider']);
    expect((create.inputSchema.properties as Record<string, { enum?: string[]; type?: string }>).provider.enum).toEqual(['binance_pay', 'cobo', 'lean']);
    expect((create.inputSchema.properties as Record<string, { type?: string }>).amount.type).toBe('string');
    expect(byName['get-refund'].inputSchema.required).toEqual(['id']);
    expect(byName['retry-refund'].inputSchema.required).toEqual(['id']);
    expect(byName['cancel-refund'].inputSchema.required).toEqual(['id']);
    expect(byName['list-refunds'].inputSchema.required ?? []).toEqual([]);
    expect((byName['list-refunds'].inputSchema.properties as Record<string, { type?: string }>).limit.type).toBe('integer');

    expect(create.annotations).toMatchObject({ readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: true });
    expect(byName['get-refund'].annotations).toMatchObject({ readOnlyHint: true, openWorldHint: false });
    expect(byName['list-refunds'].annotations).toMatchObject({ readOnlyHint: true, openWorldHint: false });
    expect(byName['retry-refund'].annotations).toMatchObject({ readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: true });
    expect(byName['cancel-refund'].annotations).toMatchObject({ readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: true });
    for (const t of tools) expect(t.description?.length ?? 0, t.name).toBeGreaterThan(40);
  });

  it('creates a refund and reads it back (MCP and REST agree), and replays the same idempotency key to the same refund', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '50.00');
    const args = createArgs(paymentId, '1.50');
    const first = await ok(mcp.m1, 'create-refund', args);
    expect(first.replayed).toBe(false);
    expect(first.refund).toMatchObject({ merchantId: 'MMCP1', provider: 'binance_pay', paymentId, amount: '1.5', currency: 'USDT', status: 'queued' });

    const read = await ok(mcp.m1, 'get-refund', { id: first.refund.id });
    expect(read).toMatchObject({ id: first.refund.id, merchantId: 'MMCP1', amount: '1.5' });
    const rest = await svc.http().get(`/v1/refunds/${first.refund.id}`).set('Authorization', `Bearer ${keys.m1}`).expect(200);
    expect(rest.body).toMatchObject({ id: first.refund.id, paymentId, amount: '1.5' });

    // Same key, same arguments: the same refund, nothing new.
    const again = await ok(mcp.m1, 'create-refund', args);
    expect(again.replayed).toBe(true);
    expect(again.refund.id).toBe(first.refund.id);
    // The same key and body through REST is the same request too.
    const { idempotency_key: key, ...body } = args;
    const viaRest = await svc.http().post('/v1/refunds').set('Authorization', `Bearer ${keys.m1}`).set('Idempotency-Key', key).send(body).expect(200);
    expect(viaRest.body.id).toBe(first.refund.id);
    expect(viaRest.headers['idempotent-replayed']).toBe('true');
    const { rows } = await svc.db.query(`SELECT count(*)::int AS n FROM refunds WHERE payment_id = $1`, [paymentId]);
    expect(rows[0].n).toBe(1);

    // Same key, other arguments: refused, as on REST.
    const reused = await problem(mcp.m1, 'create-refund', { ...args, amount: '2.00' });
    expect(reused).toMatchObject({ status: 409, code: 'idempotency_key_reused' });
  });

  it('answers invalid calls with the REST problem codes, never a crash', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
    const { idempotency_key: _k, ...noKey } = createArgs(paymentId, '1.00');
    expect(await problem(mcp.m1, 'create-refund', noKey)).toMatchObject({ status: 400, code: 'idempotency_key_required' });
    expect(await problem(mcp.m1, 'create-refund', { ...noKey, idempotency_key: '' })).toMatchObject({ code: 'idempotency_key_required' });

    const badAmount = await problem(mcp.m1, 'create-refund', createArgs(paymentId, '1e3'));
    expect(badAmount).toMatchObject({ status: 400, code: 'validation_failed' });
    expect(badAmount.errors).toEqual(expect.arrayContaining([expect.objectContaining({ field: 'amount' })]));
    const numberAmount = await problem(mcp.m1, 'create-refund', { ...createArgs(paymentId, '1'), amount: 1 });
    expect(numberAmount.errors).toEqual(expect.arrayContaining([expect.objectContaining({ field: 'amount' })]));
    const unknown = await problem(mcp.m1, 'create-refund', { ...createArgs(paymentId, '1'), surprise: true });
    expect(unknown.errors).toEqual([{ field: 'surprise', message: 'surprise is not an allowed field' }]);
    // Business rules come from the same service as REST.
    const tooMuch = await problem(mcp.m1, 'create-refund', createArgs(paymentId, '10.01'));
    expect(tooMuch).toMatchObject({ status: 422, code: 'amount_exceeds_refundable', refundableAmount: '10' });
    expect(await problem(mcp.m1, 'create-refund', { ...createArgs(paymentId, '1'), currency: 'USDC' })).toMatchObject({ code: 'currency_mismatch' });
    expect(await problem(mcp.m1, 'get-refund', { id: 'not-a-uuid' })).toMatchObject({ status: 404, code: 'not_found' });
    expect(await problem(mcp.m1, 'get-refund', { id: randomUUID() })).toMatchObject({ status: 404, code: 'not_found' });
    expect(await problem(mcp.m1, 'list-refunds', { limit: 0 })).toMatchObject({ code: 'validation_failed' });
    expect(await problem(mcp.m1, 'list-refunds', { status: 'paid' })).toMatchObject({ code: 'validation_failed' });
    // An unknown tool is a protocol-level error (JSON-RPC invalid params), as the MCP spec asks.
    await expect(mcp.m1.callTool({ name: 'delete-everything', arguments: {} })).rejects.toThrow(/Unknown tool/);
    // And the server is still there.
    expect((await mcp.m1.listTools()).tools).toHaveLength(5);
  });

  it('confines a merchant key to its own merchant’s refunds', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '20.00');
    const { refund } = await ok(mcp.m1, 'create-refund', createArgs(paymentId, '3.00'));

    expect(await problem(mcp.m2, 'get-refund', { id: refund.id })).toMatchObject({ status: 404, code: 'not_found' });
    expect(await problem(mcp.m2, 'cancel-refund', { id: refund.id })).toMatchObject({ status: 404, code: 'not_found' });
    const theirs = await ok(mcp.m2, 'list-refunds', { paymentId });
    expect(theirs.data).toEqual([]);
    // Asking for the other merchant by name changes nothing for a merchant key.
    const named = await ok(mcp.m2, 'list-refunds', { merchantId: 'MMCP1', limit: 100 });
    expect(named.data.map((r: { merchantId: string }) => r.merchantId).filter((m: string) => m !== 'MMCP2')).toEqual([]);
    // Paying a refund out of another merchant's payment is as unknown as on REST.
    expect(await problem(mcp.m2, 'create-refund', createArgs(paymentId, '1.00'))).toMatchObject({ status: 404, code: 'payment_not_found' });

    const own = await ok(mcp.m1, 'list-refunds', { paymentId });
    expect(own.data.map((r: { id: string }) => r.id)).toEqual([refund.id]);
    expect(own.nextCursor).toBeNull();
    // ops and finance read every merchant.
    expect((await ok(mcp.ops, 'get-refund', { id: refund.id })).id).toBe(refund.id);
    expect((await ok(mcp.finance, 'list-refunds', { merchantId: 'MMCP1', paymentId })).data).toHaveLength(1);
  });

  it('creates refunds with merchant keys only, as REST does', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '10.00');
    for (const who of ['ops', 'finance', 'admin'] as const) {
      expect(await problem(mcp[who], 'create-refund', createArgs(paymentId, '1.00')), who).toMatchObject({ status: 403, code: 'forbidden' });
    }
    const { rows } = await svc.db.query(`SELECT count(*)::int AS n FROM refunds WHERE payment_id = $1`, [paymentId]);
    expect(rows[0].n).toBe(0);
  });

  it('cancels per role: owning merchant and ops yes, finance and other merchants no', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '500.00');
    const held = async () => {
      const { refund } = await ok(mcp.m1, 'create-refund', createArgs(paymentId, '100.00'));
      expect(refund.status).toBe('pending_approval');
      return refund.id as string;
    };
    const a = await held();
    expect(await problem(mcp.finance, 'cancel-refund', { id: a })).toMatchObject({ status: 403, code: 'forbidden' });
    expect(await problem(mcp.m2, 'cancel-refund', { id: a })).toMatchObject({ status: 404, code: 'not_found' });
    expect((await ok(mcp.m1, 'get-refund', { id: a })).status).toBe('pending_approval');
    expect(await ok(mcp.m1, 'cancel-refund', { id: a })).toMatchObject({ id: a, status: 'canceled' });
    // Canceled is final: a second cancel changes nothing.
    expect(await problem(mcp.m1, 'cancel-refund', { id: a })).toMatchObject({ status: 409, code: 'invalid_state', refundStatus: 'canceled' });

    const b = await held();
    expect(await ok(mcp.ops, 'cancel-refund', { id: b })).toMatchObject({ id: b, status: 'canceled' });
    const c = await held();
    expect(await ok(mcp.admin, 'cancel-refund', { id: c })).toMatchObject({ id: c, status: 'canceled' });
    // The audit trail names the key that acted, as on REST.
    const events = await svc.http().get(`/v1/refunds/${b}/events`).set('Authorization', `Bearer ${keys.ops}`).expect(200);
    expect(events.body.data.at(-1)).toMatchObject({ from: 'pending_approval', to: 'canceled' });
    expect(events.body.data.at(-1).actor).toMatch(/^api_key:/);
  });

  it('retries per role: only ops and admin, only failed refunds', async () => {
    const paymentId = await sandboxPayment(svc, 'binance_pay', '30.00');
    await setFaults(svc, 'binance-pay', { insufficientBalance: true });
    let id: string;
    try {
      ({ refund: { id } } = await ok(mcp.m1, 'create-refund', createArgs(paymentId, '5.00')));
      await waitFor(async () => (await ok(mcp.m1, 'get-refund', { id })).status === 'failed', 20_000, 'the refund to fail');
    } finally {
      await setFaults(svc, 'binance-pay', { insufficientBalance: false });
    }
    expect(await problem(mcp.m1, 'retry-refund', { id })).toMatchObject({ status: 403, code: 'forbidden' });
    expect(await problem(mcp.finance, 'retry-refund', { id })).toMatchObject({ status: 403, code: 'forbidden' });
    expect(await problem(mcp.ops, 'retry-refund', { id, comment: '' })).toMatchObject({ status: 400, code: 'validation_failed' });
    expect((await ok(mcp.m1, 'get-refund', { id })).status).toBe('failed');

    const retried = await ok(mcp.ops, 'retry-refund', { id, comment: 'balance topped up' });
    expect(retried).toMatchObject({ id, status: 'queued' });
    // Not failed any more: a second retry is refused.
    expect(await problem(mcp.ops, 'retry-refund', { id })).toMatchObject({ status: 409, code: 'invalid_state' });
    await waitFor(async () => (await ok(mcp.m1, 'get-refund', { id })).status === 'succeeded', 20_000, 'the retried refund to succeed');

    const { refund } = await ok(mcp.m1, 'create-refund', createArgs(paymentId, '1.00'));
    expect(await problem(mcp.admin, 'retry-refund', { id: refund.id })).toMatchObject({ status: 409, code: 'invalid_state' });
  });
});

describe('MCP transport and authentication', () => {
  it('refuses a client without an API key (401), or with an unknown or revoked one', async () => {
    await expect(connect(undefined)).rejects.toThrow(/401/);
    await expect(connect('rk_merchant_unknownunknownunknownunknownunknown12')).rejects.toThrow(/401/);

    const created = await svc.http().post('/v1/api-keys').set('Authorization', `Bearer ${svc.adminKey}`).send({ role: 'ops', name: 'revoke me' }).expect(201);
    const client = await connect(created.body.key);
    expect((await client.listTools()).tools).toHaveLength(5);
    await svc.http().delete(`/v1/api-keys/${created.body.id}`).set('Authorization', `Bearer ${svc.adminKey}`).expect(204);
    // Stateless: every request is authenticated, so the revocation acts on the very next call.
    await expect(client.listTools()).rejects.toThrow(/401/);

    const raw = await request(svc.url)
      .post('/mcp')
      .set('Accept', 'application/json, text/event-stream')
      .send({ jsonrpc: '2.0', id: 1, method: 'tools/list' });
    expect(raw.status).toBe(401);
    expect(raw.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(raw.body.code).toBe('unauthorized');
  });

  it('answers GET and DELETE /mcp with 405 and a problem (stateless: no stream, no session)', async () => {
    for (const method of ['get', 'delete'] as const) {
      const res = await request(svc.url)[method]('/mcp').set('Authorization', `Bearer ${keys.m1}`).set('Accept', 'text/event-stream');
      expect(res.status, method).toBe(405);
      expect(res.headers.allow).toBe('POST');
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(JSON.parse(res.text)).toMatchObject({ status: 405, code: 'method_not_allowed', instance: '/mcp' });
      // Without a key it is 401 like everything else under /mcp.
      expect((await request(svc.url)[method]('/mcp')).status).toBe(401);
    }
  });

  it('is stateless: no session id, and a raw tools/call works without initialize', async () => {
    const res = await request(svc.url)
      .post('/mcp')
      .set('Authorization', `Bearer ${keys.finance}`)
      .set('Accept', 'application/json, text/event-stream')
      .send({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'list-refunds', arguments: { limit: 1 } } });
    expect(res.status).toBe(200);
    expect(res.headers['mcp-session-id']).toBeUndefined();
    expect(res.body).toMatchObject({ jsonrpc: '2.0', id: 7, result: { structuredContent: { data: expect.any(Array) } } });
    expect(res.body.result.isError ?? false).toBe(false);
    // Rate-limited like the REST API (headers from ApiKeyGuard).
    expect(res.headers['ratelimit-limit']).toBeDefined();
  });
});
