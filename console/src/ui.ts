import { ApiError, type Me, type Refund } from './api.js';
import { h } from './dom.js';

export const PROVIDERS = ['binance_pay', 'cobo', 'lean'] as const;
export const STATUSES = [
  'pending_approval',
  'queued',
  'processing',
  'requires_action',
  'succeeded',
  'partially_succeeded',
  'failed',
  'canceled',
] as const;
const FINAL = new Set(['succeeded', 'partially_succeeded', 'failed', 'canceled']);

export function isFinal(status: string): boolean {
  return FINAL.has(status);
}

/** What the role may do: mirrors the API's @Roles so only usable buttons are shown (the API still decides). */
export const can = {
  opsActions: (me: Me) => me.role === 'ops' || me.role === 'admin',
  cancel: (me: Me) => me.role === 'merchant' || me.role === 'ops' || me.role === 'admin',
  queues: (me: Me) => me.role === 'ops' || me.role === 'admin',
  reports: (me: Me) => me.role === 'finance' || me.role === 'ops' || me.role === 'admin',
  filterByMerchant: (me: Me) => me.role !== 'merchant',
};

/** Refund actions the role may take in the refund's status (refunds-api.md §4, §6). */
export function actionsFor(me: Me, refund: Refund): Array<'retry' | 'approve' | 'reject' | 'cancel'> {
  const out: Array<'retry' | 'approve' | 'reject' | 'cancel'> = [];
  const ops = can.opsActions(me);
  if (ops && refund.status === 'failed' && !refund.review) out.push('retry');
  if (ops && refund.status === 'pending_approval') out.push('approve', 'reject');
  if (can.cancel(me) && ['pending_approval', 'queued', 'requires_action'].includes(refund.status)) out.push('cancel');
  return out;
}

export function statusBadge(status: string): HTMLElement {
  return h('span', { class: `status status-${status.replace(/[^a-z_]/g, '')}` }, status.replace(/_/g, ' '));
}

/** An ISO instant shown in UTC to the second, with the exact value in the markup. */
export function when(iso: string | null): HTMLElement | string {
  if (!iso) return '—';
  return h('time', { datetime: iso, title: iso }, `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC`);
}

/** A decimal amount exactly as the API wrote it, with its currency. */
export function money(amount: string, currency?: string): HTMLElement {
  return h('span', { class: 'money' }, amount, currency ? h('span', { class: 'ccy' }, ` ${currency}`) : null);
}

/** An RFC 9457 problem: its title and detail (and field errors), announced to screen readers. */
export function problemBox(err: unknown, context?: string): HTMLElement {
  const e = err instanceof ApiError ? err : new ApiError(0, 'Something went wrong', (err as Error)?.message, undefined);
  return h(
    'div',
    { class: 'problem', role: 'alert' },
    h('p', { class: 'problem-title' }, context ? `${context}: ${e.title}` : e.title),
    e.detail ? h('p', { class: 'problem-detail' }, e.detail) : null,
    e.errors.length ? h('ul', {}, e.errors.map((x) => h('li', {}, `${x.field}: ${x.message}`))) : null,
    e.code || e.status ? h('p', { class: 'problem-code' }, [e.status ? `HTTP ${e.status}` : '', e.code ? ` · ${e.code}` : '']) : null,
  );
}

export function loading(what: string): HTMLElement {
  return h('p', { class: 'note loading', role: 'status' }, `Loading ${what}…`);
}

export function empty(text: string): HTMLElement {
  return h('p', { class: 'note empty', role: 'status' }, text);
}
