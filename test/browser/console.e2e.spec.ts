import { parse } from 'csv-parse/sync';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CSV_COLUMNS } from '../../src/reports/csv-export.service.js';
import { merchantKey, roleKey, sandboxPayment, setFaults, startService, type TestService, waitFor } from '../support/service.js';
import { type Browser, actionAccepted, ensureConsoleBuilt, launchBrowser, screenshot, signIn } from './support/browser.js';

/**
 * The ops console (/console) driven in headless Chromium against the real service, its
 * sandbox providers and sandbox faults. Screenshots of the main pages go to docs/screenshots.
 */
let svc: TestService;
let browser: Browser;
let m1: string;
let m2: string;
let ops: string;
let finance: string;
/** Refund ids by what they are, for the assertions and the screenshots. */
const ids: Record<string, string> = {};

const as = (key: string) => `Bearer ${key}`;

async function create(key: string, body: Record<string, unknown>): Promise<string> {
  const res = await svc.http().post('/v1/refunds').set('Authorization', as(key)).set('Idempotency-Key', randomUUID()).send(body);
  if (res.status !== 202) throw new Error(`create answered ${res.status}: ${JSON.stringify(res.body)}`);
  return res.body.id as string;
}

async function refund(id: string) {
  return (await svc.http().get(`/v1/refunds/${id}`).set('Authorization', as(ops)).expect(200)).body;
}

async function until(id: string, statuses: string[]) {
  return waitFor(async () => {
    const r = await refund(id);
    return statuses.includes(r.status) ? r : undefined;
  }, 30_000, `refund ${id} in ${statuses.join('/')}`);
}

async function binance(key: string, amount: string, paid = '100.00') {
  const paymentId = await sandboxPayment(svc, 'binance_pay', paid);
  return create(key, { provider: 'binance_pay', paymentId, amount, currency: 'USDT', reason: 'requested_by_customer' });
}

beforeAll(async () => {
  ensureConsoleBuilt();
  svc = await startService('console');
  [m1, m2, ops, finance] = await Promise.all([merchantKey(svc, 'M1001'), merchantKey(svc, 'M2002'), roleKey(svc, 'ops'), roleKey(svc, 'finance')]);
  await setFaults(svc, 'binance-pay', { settleAfterMs: 200 });
  await setFaults(svc, 'lean', { settleAfterMs: 200 });
  await svc.http().put('/v1/merchants/M1001').set('Authorization', as(svc.adminKey)).send({ name: 'Shop 1001', approvalThresholds: { USDT: '1000' } }).expect(200);

  // Real sandbox data of several kinds, for the pages and the screenshots.
  ids.succeeded = await binance(m1, '25.17');
  const cobo = await sandboxPayment(svc, 'cobo', '50.00');
  ids.requiresAction = await create(m1, { provider: 'cobo', paymentId: cobo, amount: '12.50', currency: 'USDT', cobo: { tokenId: 'TRON_USDT' } });
  const lean = await sandboxPayment(svc, 'lean', '100.00', 'AED');
  ids.lean = await create(m1, { provider: 'lean', paymentId: lean, amount: '10.10', currency: 'AED', reason: 'duplicate' });
  ids.pendingApproval = await binance(m1, '1500.123', '2000.00');
  ids.otherMerchant = await binance(m2, '7.5');
  ids.precise = await binance(m1, '0.00000001');
  await Promise.all([ids.succeeded, ids.otherMerchant, ids.precise].map((id) => until(id, ['succeeded'])));
  await until(ids.requiresAction, ['requires_action']);
  await until(ids.pendingApproval, ['pending_approval']);

  browser = await launchBrowser();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await svc?.stop();
});

async function secretsNotShown(page: Page, key: string) {
  expect(await page.content()).not.toContain(key);
  const storage = await page.evaluate('({ local: localStorage.length, session: Object.values(sessionStorage) })');
  expect(storage).toEqual({ local: 0, session: [key] });
}

describe('console serving and GET /v1/me', () => {
  it('serves the console with a strict CSP, and /v1/me tells the role without the key', async () => {
    const page = await svc.http().get('/console/').expect(200);
    const csp = page.headers['content-security-policy'];
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe');
    expect(page.headers['x-frame-options']).toBe('DENY');
    expect(page.text).toContain('<main id="main"');
    const script = /src="(\/console\/assets\/[^"]+\.js)"/.exec(page.text)?.[1];
    expect(script).toBeDefined();
    await svc.http().get(script!).expect(200).expect('Content-Type', /javascript/).expect('Cache-Control', /immutable/);
    await svc.http().get('/console').expect(301).expect('Location', '/console/');
    await svc.http().get('/console/assets/nope.js').expect(404);
    await svc.http().get('/console/refunds').expect(404);

    const me = await svc.http().get('/v1/me').set('Authorization', as(m1)).expect(200);
    expect(me.body).toEqual({ role: 'merchant', merchantId: 'M1001' });
    expect((await svc.http().get('/v1/me').set('Authorization', as(finance)).expect(200)).body).toEqual({ role: 'finance', merchantId: null });
    await svc.http().get('/v1/me').expect(401);
    await svc.http().get('/v1/queues').set('Authorization', as(finance)).expect(403);
    await svc.http().get('/v1/queues').set('Authorization', as(m1)).expect(403);
  });

  it('refuses a wrong key at sign-in with the problem title and detail', async () => {
    const page = await browser.context.newPage();
    await page.goto(`${svc.url}/console/`);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await screenshot(page, 'sign-in');
    await page.getByLabel('API key').fill('rk_not_a_real_key');
    await page.getByRole('button', { name: 'Sign in' }).click();
    const alert = page.getByRole('alert');
    await expect.poll(() => alert.textContent()).toContain('Unauthorized');
    expect(await alert.textContent()).toContain('Unknown or revoked API key.');
    expect(await page.evaluate('sessionStorage.length')).toBe(0);
    await page.close();
  });
});

describe('ops', () => {
  it('finds a failed refund, retries it (failing again while the provider still refuses) until it succeeds', async () => {
    await setFaults(svc, 'binance-pay', { insufficientBalance: true });
    try {
      await retryUntilSucceeded();
    } finally {
      await setFaults(svc, 'binance-pay', { insufficientBalance: false });
    }
  });

  async function retryUntilSucceeded() {
    const failedId = await binance(m1, '5.55');
    expect(await until(failedId, ['failed', 'succeeded'])).toMatchObject({ status: 'failed', failureCode: '400304' });
    ids.failed = failedId;

    const page = await signIn(browser, svc.url, ops);
    await secretsNotShown(page, ops);
    expect(await page.getByTestId('who').textContent()).toBe('Signed in as ops');
    await page.locator(`tr[data-refund-id="${ids.succeeded}"]`).waitFor();
    await screenshot(page, 'refunds');

    // Filter: failed, failure code 400304.
    await page.getByRole('checkbox', { name: 'failed' }).check();
    await page.getByLabel('Failure code').fill('400304');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await expect.poll(() => page.url()).toContain('status=failed');
    const row = page.locator(`tr[data-refund-id="${failedId}"]`);
    await row.waitFor();
    // Only failed refunds are listed; the succeeded one is filtered out.
    expect(await page.locator(`tr[data-refund-id="${ids.succeeded}"]`).count()).toBe(0);
    expect(await row.locator('td').nth(5).textContent()).toBe('5.55 USDT');

    await row.getByRole('link').click();
    await page.getByTestId('failure-code').waitFor();
    expect(await page.getByTestId('failure-code').textContent()).toBe('400304');
    expect(await page.locator('button[data-action]').evaluateAll((bs) => bs.map((b) => b.textContent))).toEqual(['Retry']);

    // First retry while the provider still refuses: it fails again.
    await page.getByLabel(/Comment/).fill('first try');
    await page.getByRole('button', { name: 'Retry' }).click();
    await actionAccepted(page, 'Retry');
    await expect.poll(() => page.getByTestId('live').textContent(), { timeout: 30_000 }).toBe('Final status: failed.');
    expect((await refund(failedId)).status).toBe('failed');

    // The balance is topped up; the second retry succeeds.
    await setFaults(svc, 'binance-pay', { insufficientBalance: false });
    await page.getByLabel(/Comment/).fill('balance topped up');
    await page.getByRole('button', { name: 'Retry' }).click();
    await expect.poll(() => page.getByTestId('live').textContent(), { timeout: 30_000 }).toBe('Final status: succeeded.');
    expect(await page.locator('button[data-action]').count()).toBe(0);

    const api = await refund(failedId);
    expect(api).toMatchObject({ status: 'succeeded', refundedAmount: '5.55' });
    const timeline = page.getByTestId('timeline');
    expect(await timeline.getByText('balance topped up').count()).toBe(1);
    expect(await timeline.getByText('first try').count()).toBe(1);
    const events = (await svc.http().get(`/v1/refunds/${failedId}/events`).set('Authorization', as(ops)).expect(200)).body.data;
    const retries = events.filter((e: { from: string; to: string }) => e.from === 'failed' && e.to === 'queued');
    expect(retries.map((e: { detail: { comment: string } }) => e.detail.comment)).toEqual(['first try', 'balance topped up']);
    expect(await timeline.locator('li').count()).toBe(events.length);
    const creates = (await svc.http().get(`/v1/refunds/${failedId}/attempts`).set('Authorization', as(ops)).expect(200)).body.data.filter(
      (a: { operation: string }) => a.operation === 'create',
    );
    expect(creates).toHaveLength(3);
    const allAttempts = (await svc.http().get(`/v1/refunds/${failedId}/attempts`).set('Authorization', as(ops)).expect(200)).body.data;
    expect(await page.getByRole('heading', { name: /Provider attempts/ }).textContent()).toBe(`Provider attempts (${allAttempts.length})`);
    await screenshot(page, 'refund-detail');

    // Queues: the same queues as the API, with their counts.
    await page.getByRole('link', { name: 'Queues' }).click();
    const table = page.locator('table.queues');
    await table.waitFor();
    const fromApi = (await svc.http().get('/v1/queues').set('Authorization', as(ops)).expect(200)).body.data as Array<{ name: string; counts: Record<string, number> }>;
    expect(fromApi.map((q) => q.name).sort()).toEqual(['merchant-webhooks', 'refunds-binance_pay', 'refunds-cobo', 'refunds-lean']);
    expect((await table.locator('tbody tr').evaluateAll((rs) => rs.map((r) => r.getAttribute('data-queue')))).sort()).toEqual(fromApi.map((q) => q.name).sort());
    // The page shows what the API reads (counts move while refunds are polled: compare a few times).
    const counts = (rows: Array<{ name: string; counts: Record<string, number> }>) =>
      rows.map((q) => [q.name, ...['waiting', 'active', 'delayed', 'failed', 'completed'].map((s) => String(q.counts[s]))]).sort();
    await expect
      .poll(async () => {
        await page.getByRole('button', { name: 'Refresh now' }).click();
        await page.getByText(/^Read at /).waitFor();
        const ui = await table.locator('tbody tr').evaluateAll((rs) => rs.map((r) => [...r.querySelectorAll('th, td')].slice(0, 6).map((c) => c.textContent)));
        const api = (await svc.http().get('/v1/queues').set('Authorization', as(ops)).expect(200)).body.data;
        return JSON.stringify(ui.sort()) === JSON.stringify(counts(api));
      }, { timeout: 15_000, interval: 500 })
      .toBe(true);
    await screenshot(page, 'queues');

    // Sign out forgets the key.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    expect(await page.evaluate('sessionStorage.length')).toBe(0);
    await page.goto(`${svc.url}/console/#/refunds/${failedId}`);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await page.close();
  }

  it('approves a refund held for approval', async () => {
    const page = await signIn(browser, svc.url, ops);
    await page.goto(`${svc.url}/console/#/refunds/${ids.pendingApproval}`);
    await page.getByRole('button', { name: 'Approve' }).waitFor();
    expect(await page.locator('button[data-action]').evaluateAll((bs) => bs.map((b) => b.textContent))).toEqual(['Approve', 'Reject', 'Cancel refund']);
    await page.getByRole('button', { name: 'Approve' }).click();
    await actionAccepted(page, 'Approve');
    await expect.poll(() => page.getByTestId('live').textContent(), { timeout: 30_000 }).toBe('Final status: succeeded.');
    expect((await refund(ids.pendingApproval)).status).toBe('succeeded');
    await page.close();
  });
});

describe('merchant', () => {
  it("sees only its own refunds, and another merchant's refund is not found", async () => {
    // The other merchant's refund exists and its owner sees it.
    await svc.http().get(`/v1/refunds/${ids.otherMerchant}`).set('Authorization', as(m2)).expect(200);

    const page = await signIn(browser, svc.url, m1);
    await secretsNotShown(page, m1);
    expect(await page.getByTestId('who').textContent()).toBe('Signed in as merchant of M1001');
    await page.locator(`tr[data-refund-id="${ids.succeeded}"]`).waitFor();
    const listed = await page.locator('tr[data-refund-id]').evaluateAll((rs) => rs.map((r) => r.getAttribute('data-refund-id')));
    expect(listed).toContain(ids.requiresAction);
    expect(listed).not.toContain(ids.otherMerchant);
    const merchants = await page.locator('tr[data-refund-id] td:nth-child(3)').allTextContents();
    expect(new Set(merchants)).toEqual(new Set(['M1001']));
    // No ops or finance pages, no merchant filter.
    expect(await page.getByRole('link', { name: 'Queues' }).count()).toBe(0);
    expect(await page.getByRole('link', { name: 'Finance report' }).count()).toBe(0);
    expect(await page.getByLabel('Merchant id').count()).toBe(0);

    // Searching for the other merchant's payment finds nothing either.
    const other = await refund(ids.otherMerchant);
    await page.getByLabel('Payment id').fill(other.paymentId);
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await page.getByText('No refunds match these filters.').waitFor();

    // Its URL: not found, nothing of it shown.
    await page.goto(`${svc.url}/console/#/refunds/${ids.otherMerchant}`);
    await page.getByRole('heading', { name: 'Refund not found' }).waitFor();
    expect(await page.getByRole('alert').textContent()).toContain('Not found');
    expect(await page.content()).not.toContain(other.paymentId);

    // Its own refund: cancel only, no ops actions.
    await page.goto(`${svc.url}/console/#/refunds/${ids.requiresAction}`);
    await page.getByRole('button', { name: 'Cancel refund' }).waitFor();
    expect(await page.locator('button[data-action]').evaluateAll((bs) => bs.map((b) => b.textContent))).toEqual(['Cancel refund']);

    await page.goto(`${svc.url}/console/#/queues`);
    await page.getByRole('heading', { name: 'Page not found' }).waitFor();
    await page.close();
  });
});

describe('keyboard', () => {
  it('signs in and opens a refund with the keyboard only, with a visible focus', async () => {
    const page = await browser.context.newPage();
    await page.goto(`${svc.url}/console/`);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    // The key field has the focus on arrival; Enter submits.
    await page.keyboard.type(m1);
    await page.keyboard.press('Enter');
    await page.getByTestId('who').waitFor();
    // After a navigation the page heading has the focus, so Tab starts in the page.
    await expect.poll(() => page.evaluate('document.activeElement?.textContent')).toBe('Refunds');
    let reached = false;
    for (let i = 0; i < 60 && !reached; i++) {
      await page.keyboard.press('Tab');
      reached = (await page.evaluate(`document.activeElement?.getAttribute('href') ?? ''`)) === `#/refunds/${ids.succeeded}`;
    }
    expect(reached).toBe(true);
    const outline = await page.evaluate('getComputedStyle(document.activeElement).outlineStyle');
    expect(outline).not.toBe('none');
    await page.keyboard.press('Enter');
    await page.getByTestId('timeline').waitFor();
    expect(await page.evaluate('document.activeElement?.tagName')).toBe('H1');
    await page.close();
  });
});

describe('revoked key', () => {
  it('signs the user out with the reason when the API stops accepting the key', async () => {
    const created = await svc.http().post('/v1/api-keys').set('Authorization', as(svc.adminKey)).send({ role: 'ops', name: 'short-lived' }).expect(201);
    const page = await signIn(browser, svc.url, created.body.key);
    await page.locator(`tr[data-refund-id="${ids.succeeded}"]`).waitFor();
    await svc.http().delete(`/v1/api-keys/${created.body.id}`).set('Authorization', as(svc.adminKey)).expect(204);
    await page.getByRole('link', { name: 'Queues' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    expect(await page.getByRole('status').first().textContent()).toBe('Signed out: Unauthorized (Unknown or revoked API key.)');
    expect(await page.evaluate('sessionStorage.length')).toBe(0);
    await page.close();
  });
});

describe('finance', () => {
  it('sees the summary as the API computes it and downloads the CSV', async () => {
    const page = await signIn(browser, svc.url, finance);
    await secretsNotShown(page, finance);
    await page.getByRole('link', { name: 'Finance report' }).click();
    const table = page.locator('table.summary');
    await table.waitFor();
    const api = (await svc.http().get('/v1/reports/summary').set('Authorization', as(finance)).expect(200)).body.data as Array<Record<string, string | number>>;
    const shown = await table.locator('tbody tr').evaluateAll((rs) => rs.map((r) => [...r.querySelectorAll('td')].map((td) => td.textContent)));
    expect(shown).toEqual(api.map((r) => [r.provider, r.currency, r.status, String(r.count), r.amount, r.refundedAmount]));
    // 25.17 + 7.5 + 0.00000001 + 5.55 + 1500.123, exact.
    const succeededUsdt = shown.find((r) => r[0] === 'binance_pay' && r[2] === 'succeeded');
    expect(succeededUsdt?.slice(3)).toEqual(['5', '1538.34300001', '1538.34300001']);
    await screenshot(page, 'finance-report');

    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download CSV' }).click()]);
    expect(download.suggestedFilename()).toMatch(/^refunds-.*\.csv$/);
    const csv = readFileSync(await download.path(), 'utf8');
    const [header, ...rows] = parse(csv) as string[][];
    expect(header).toEqual(CSV_COLUMNS.map(([name]) => name));
    const all = (await svc.http().get('/v1/refunds').query({ limit: 100 }).set('Authorization', as(finance)).expect(200)).body.data as Array<{ id: string }>;
    expect(rows.map((r) => r[0]).sort()).toEqual(all.map((r) => r.id).sort());
    const byId = new Map(rows.map((r) => [r[0], Object.fromEntries(header.map((h, i) => [h, r[i]]))]));
    expect(byId.get(ids.succeeded)).toMatchObject({ merchant_id: 'M1001', amount: '25.17', refunded_amount: '25.17', currency: 'USDT', status: 'succeeded' });
    expect(byId.get(ids.precise)).toMatchObject({ amount: '0.00000001', status: 'succeeded' });
    expect(byId.get(ids.lean)).toMatchObject({ provider: 'lean', amount: '10.1', currency: 'AED' });
    expect(byId.get(ids.otherMerchant)).toMatchObject({ merchant_id: 'M2002', amount: '7.5' });

    // Finance reads only: no action on a refund that ops could still cancel.
    await page.goto(`${svc.url}/console/#/refunds/${ids.requiresAction}`);
    await page.getByTestId('timeline').waitFor();
    expect(await page.locator('button[data-action]').count()).toBe(0);
    expect(await page.getByRole('link', { name: 'Queues' }).count()).toBe(0);
    await page.close();
  });

  it('left no console error and no CSP violation on any page', () => {
    // The API's deliberate 4xx answers (the wrong key at sign-in, the other merchant's refund)
    // are logged by the browser as failed loads of /v1 URLs; anything else is a fault.
    const unexpected = browser.errors.filter((e) => !/^Failed to load resource: .* status of 40[14] .*\(http:\/\/127\.0\.0\.1:\d+\/v1\//.test(e));
    expect(unexpected).toEqual([]);
    expect(browser.errors.length).toBeGreaterThan(0);
  });
});
