import { api, apiFile, query, type SummaryRow } from '../api.js';
import { field, fill, h, select } from '../dom.js';
import type { ViewContext } from '../main.js';
import { empty, loading, money, problemBox, PROVIDERS, STATUSES } from '../ui.js';

const GROUPS = ['provider', 'currency', 'status', 'merchant', 'day'] as const;
const DEFAULT_GROUPS = ['provider', 'currency', 'status'];
const FIELD_OF: Record<string, keyof SummaryRow> = { provider: 'provider', currency: 'currency', status: 'status', merchant: 'merchantId', day: 'day' };

/** Finance: GET /v1/reports/summary and the CSV export (GET /v1/reports/refunds.csv) with the same filters. */
export async function renderReports(ctx: ViewContext): Promise<void> {
  const { main, params, signal } = ctx;
  const groups = params.has('groupBy') ? (params.get('groupBy') ?? '').split(',').filter(Boolean) : DEFAULT_GROUPS;
  if (!groups.includes('currency')) groups.push('currency');

  const date = (name: string) => h('input', { type: 'date', name, value: params.get(name) ?? '' });
  const form = h(
    'form',
    { class: 'filters', 'aria-label': 'Report filters' },
    h(
      'div',
      { class: 'filter-grid' },
      field('From (UTC date, inclusive)', date('from')),
      field('To (UTC date, exclusive)', date('to')),
      field('Provider', select('provider', [['', 'Any provider'], ...PROVIDERS.map((p) => [p, p] as [string, string])], params.get('provider') ?? '')),
      field('Status', select('status', [['', 'Any status'], ...STATUSES.map((s) => [s, s.replace(/_/g, ' ')] as [string, string])], params.get('status') ?? '')),
    ),
    h(
      'fieldset',
      { class: 'statuses' },
      h('legend', {}, 'Group by'),
      GROUPS.map((g) =>
        h(
          'label',
          { class: 'check' },
          // Amounts of different currencies are never added together: currency is always a group.
          h('input', { type: 'checkbox', name: 'groupBy', value: g, checked: groups.includes(g), disabled: g === 'currency' }),
          ` ${g}`,
        ),
      ),
    ),
    h('div', { class: 'form-actions' }, h('button', { type: 'submit' }, 'Show report')),
  );
  const filters = () => ({
    from: params.get('from') ?? undefined,
    to: params.get('to') ?? undefined,
    provider: params.get('provider') ?? undefined,
    status: params.get('status') ?? undefined,
  });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const next = new URLSearchParams();
    for (const name of ['from', 'to', 'provider', 'status']) {
      const v = String(data.get(name) ?? '').trim();
      if (v) next.set(name, v);
    }
    next.set('groupBy', ['currency', ...data.getAll('groupBy').map(String)].filter((g, i, all) => all.indexOf(g) === i).join(','));
    location.hash = `#/reports?${next.toString()}`;
  });

  const download = h('button', { type: 'button' }, 'Download CSV');
  const downloadStatus = h('div', { 'aria-live': 'polite' });
  download.addEventListener('click', async () => {
    download.disabled = true;
    fill(downloadStatus, h('p', { class: 'note', role: 'status' }, 'Preparing the export…'));
    try {
      const { blob, filename } = await apiFile(`/v1/reports/refunds.csv${query(filters())}`, { signal });
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: filename, class: 'visually-hidden' }, filename);
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      fill(downloadStatus, h('p', { class: 'success', role: 'status' }, `Downloaded ${filename} (${blob.size} bytes).`));
    } catch (err) {
      if (!signal.aborted) fill(downloadStatus, problemBox(err, 'Export failed'));
    } finally {
      download.disabled = false;
    }
  });

  const result = h('section', { 'aria-labelledby': 'summary-h' }, loading('the summary'));
  fill(
    main,
    h('h1', {}, 'Finance report'),
    form,
    h('div', { class: 'form-actions' }, download, h('span', { class: 'hint' }, 'One row per refund matching the filters above (group-by does not apply).')),
    downloadStatus,
    result,
  );

  try {
    const res = await api<{ data: SummaryRow[] }>(`/v1/reports/summary${query({ ...filters(), groupBy: groups.join(',') })}`, { signal });
    if (signal.aborted) return;
    const heading = h('h2', { id: 'summary-h' }, 'Summary');
    if (!res.data.length) return fill(result, heading, empty('No refunds in this period.'));
    const cols = GROUPS.filter((g) => groups.includes(g));
    fill(
      result,
      heading,
      h('p', { class: 'note' }, 'Amounts are exact decimals in each row’s currency, summed by the database; they are never added across currencies.'),
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'summary' },
          h('caption', { class: 'visually-hidden' }, 'Refund counts and amounts per group'),
          h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)), ['Count', 'Amount', 'Refunded'].map((c) => h('th', { scope: 'col', class: 'num' }, c)))),
          h(
            'tbody',
            {},
            res.data.map((r) =>
              h(
                'tr',
                {},
                cols.map((c) => h('td', {}, String(r[FIELD_OF[c]] ?? ''))),
                h('td', { class: 'num' }, String(r.count)),
                h('td', { class: 'num' }, money(r.amount)),
                h('td', { class: 'num' }, money(r.refundedAmount)),
              ),
            ),
          ),
        ),
      ),
    );
  } catch (err) {
    if (!signal.aborted) fill(result, problemBox(err, 'Could not load the summary'));
  }
}
