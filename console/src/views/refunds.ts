import { api, query, type Refund } from '../api.js';
import { field, fill, h, select } from '../dom.js';
import type { ViewContext } from '../main.js';
import { can, empty, loading, money, problemBox, PROVIDERS, STATUSES, statusBadge, when } from '../ui.js';

/** Filters kept in the URL (#/refunds?status=failed&...), so a view can be reloaded and shared. */
const FILTERS = ['provider', 'status', 'merchantId', 'paymentId', 'failureCode', 'createdFrom', 'createdTo', 'stuck'] as const;
const PAGE_SIZE = '25';

/** The refund list: GET /v1/refunds with its filters, paged with its keyset cursor ("Load more"). */
export async function renderRefunds(ctx: ViewContext): Promise<void> {
  const { me, main, params, signal } = ctx;
  const statuses = new Set((params.get('status') ?? '').split(',').filter(Boolean));

  const text = (name: string, attrs: Record<string, string> = {}) =>
    h('input', { type: 'text', name, value: params.get(name) ?? '', autocomplete: 'off', spellcheck: 'false', ...attrs });
  const date = (name: string) => h('input', { type: 'date', name, value: params.get(name) ?? '' });
  const stuck = h('input', { type: 'checkbox', name: 'stuck', id: 'filter-stuck', checked: params.get('stuck') === 'true' });

  const form = h(
    'form',
    { class: 'filters', role: 'search', 'aria-label': 'Filter refunds' },
    h(
      'div',
      { class: 'filter-grid' },
      field('Provider', select('provider', [['', 'Any provider'], ...PROVIDERS.map((p) => [p, p] as [string, string])], params.get('provider') ?? '')),
      can.filterByMerchant(me) ? field('Merchant id', text('merchantId', { maxlength: '64' })) : null,
      field('Payment id', text('paymentId', { maxlength: '128' })),
      field('Failure code', text('failureCode', { maxlength: '64' })),
      field('Created from (UTC date)', date('createdFrom')),
      field('Created before (UTC date)', date('createdTo')),
    ),
    h(
      'fieldset',
      { class: 'statuses' },
      h('legend', {}, 'Status'),
      STATUSES.map((s) =>
        h(
          'label',
          { class: 'check' },
          h('input', { type: 'checkbox', name: 'status', value: s, checked: statuses.has(s) }),
          ` ${s.replace(/_/g, ' ')}`,
        ),
      ),
    ),
    h(
      'div',
      { class: 'form-actions' },
      h('label', { class: 'check', for: 'filter-stuck' }, stuck, ' Stuck only (in flight for too long)'),
      h('button', { type: 'submit' }, 'Apply filters'),
      h('button', { type: 'button', class: 'secondary', onclick: () => (location.hash = '#/refunds') }, 'Clear'),
    ),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const next = new URLSearchParams();
    for (const name of FILTERS) {
      if (name === 'status') {
        const picked = data.getAll('status').map(String);
        if (picked.length) next.set('status', picked.join(','));
      } else if (name === 'stuck') {
        if (stuck.checked) next.set('stuck', 'true');
      } else {
        const v = String(data.get(name) ?? '').trim();
        if (v) next.set(name, v);
      }
    }
    const qs = next.toString();
    location.hash = `#/refunds${qs ? `?${qs}` : ''}`;
  });

  const results = h('section', { 'aria-labelledby': 'results-heading', class: 'results' });
  fill(main, h('h1', {}, 'Refunds'), form, results);

  const filter: Record<string, string | undefined> = { limit: PAGE_SIZE };
  for (const name of FILTERS) filter[name] = params.get(name) ?? undefined;
  if (!can.filterByMerchant(me)) delete filter.merchantId;

  const tbody = h('tbody');
  const count = h('p', { class: 'note', role: 'status', 'aria-live': 'polite' });
  const more = h('div', { class: 'more' });
  fill(results, h('h2', { id: 'results-heading', class: 'visually-hidden' }, 'Results'), loading('refunds'));

  let shown = 0;
  const load = async (cursor?: string) => {
    const page = await api<{ data: Refund[]; nextCursor: string | null }>(`/v1/refunds${query({ ...filter, cursor })}`, { signal });
    if (signal.aborted) return;
    if (!cursor && page.data.length === 0) {
      fill(results, h('h2', { id: 'results-heading', class: 'visually-hidden' }, 'Results'), empty('No refunds match these filters.'));
      return;
    }
    if (!cursor) {
      fill(
        results,
        h('h2', { id: 'results-heading', class: 'visually-hidden' }, 'Results'),
        count,
        h(
          'div',
          { class: 'table-wrap' },
          h(
            'table',
            { class: 'refunds' },
            h('caption', { class: 'visually-hidden' }, 'Refunds, newest first'),
            h(
              'thead',
              {},
              h(
                'tr',
                {},
                ['Created', 'Refund', 'Merchant', 'Provider', 'Payment', 'Amount', 'Refunded', 'Status', 'Failure'].map((c) =>
                  h('th', { scope: 'col', class: c === 'Amount' || c === 'Refunded' ? 'num' : undefined }, c),
                ),
              ),
            ),
            tbody,
          ),
        ),
        more,
      );
    }
    for (const r of page.data) tbody.append(row(r));
    shown += page.data.length;
    count.textContent = `${shown} refund${shown === 1 ? '' : 's'} shown${page.nextCursor ? '; more available' : ''}.`;
    if (page.nextCursor) {
      const next = page.nextCursor;
      const button = h('button', { type: 'button', class: 'secondary' }, 'Load more');
      button.addEventListener('click', async () => {
        button.disabled = true;
        button.textContent = 'Loading…';
        try {
          const firstNew = tbody.rows.length;
          await load(next);
          // Keyboard users continue from the first new row.
          tbody.rows[firstNew]?.querySelector('a')?.focus();
        } catch (err) {
          fill(more, problemBox(err, 'Could not load more refunds'), button);
          button.disabled = false;
          button.textContent = 'Load more';
        }
      });
      fill(more, button);
    } else {
      fill(more);
    }
  };
  try {
    await load();
  } catch (err) {
    if (!signal.aborted) fill(results, problemBox(err, 'Could not load the refunds'));
  }
}

function row(r: Refund): HTMLTableRowElement {
  return h(
    'tr',
    { 'data-refund-id': r.id },
    h('td', {}, when(r.createdAt)),
    h('td', {}, h('a', { href: `#/refunds/${encodeURIComponent(r.id)}`, class: 'mono', title: r.id, 'aria-label': `Refund ${r.id}` }, r.id.slice(0, 8))),
    h('td', {}, r.merchantId),
    h('td', {}, r.provider),
    h('td', { class: 'mono wrap' }, r.paymentId),
    h('td', { class: 'num' }, money(r.amount, r.currency)),
    h('td', { class: 'num' }, money(r.refundedAmount)),
    h('td', {}, statusBadge(r.status), r.review ? h('span', { class: 'flag', title: r.review.reason }, ' review') : null),
    h('td', { class: 'mono' }, r.failureCode ?? ''),
  );
}
