import { api, ApiError, type Attempt, type Refund, type RefundEvent } from '../api.js';
import { type Child, field, fill, h } from '../dom.js';
import type { ViewContext } from '../main.js';
import { actionsFor, can, empty, isFinal, loading, money, problemBox, statusBadge, when } from '../ui.js';

/** While a refund is in flight the page re-reads it this often. */
const POLL_MS = 2_000;

const ACTION_LABEL = { retry: 'Retry', approve: 'Approve', reject: 'Reject', cancel: 'Cancel refund' } as const;
type Action = keyof typeof ACTION_LABEL;
/** Irreversible: asked once more before sending. */
const CONFIRM: Partial<Record<Action, string>> = {
  reject: 'Reject this refund? It will be canceled and its amount released.',
  cancel: 'Cancel this refund? This cannot be undone.',
};

/** One refund: its fields, the actions the role may take, its provider attempts and its event timeline. */
export async function renderRefund(ctx: ViewContext, id: string): Promise<void> {
  const { me, main, signal } = ctx;
  const base = `/v1/refunds/${encodeURIComponent(id)}`;
  const back = h('p', { class: 'back' }, h('a', { href: '#/refunds' }, '← All refunds'));
  fill(main, back, h('h1', {}, 'Refund'), loading('the refund'));

  const read = () =>
    Promise.all([
      api<Refund>(base, { signal }),
      api<{ data: Attempt[] }>(`${base}/attempts`, { signal }),
      api<{ data: RefundEvent[] }>(`${base}/events`, { signal }),
    ]);

  let data: Awaited<ReturnType<typeof read>>;
  try {
    data = await read();
  } catch (err) {
    if (signal.aborted) return;
    const notFound = err instanceof ApiError && err.status === 404;
    fill(main, back, h('h1', {}, notFound ? 'Refund not found' : 'Refund'), problemBox(err));
    return;
  }
  if (signal.aborted) return;

  const heading = h('h1', {});
  const summary = h('section', { 'aria-labelledby': 'summary-h' });
  const actions = h('section', { 'aria-labelledby': 'actions-h', class: 'actions' });
  const attempts = h('section', { 'aria-labelledby': 'attempts-h' });
  const timeline = h('section', { 'aria-labelledby': 'timeline-h' });
  const live = h('p', { class: 'note', 'aria-live': 'polite', 'data-testid': 'live' });
  const outcome = h('div', { 'aria-live': 'polite', class: 'outcome' });
  const comment = h('textarea', { name: 'comment', rows: '2', maxlength: '500' });
  let shownActions = '';
  let timer: ReturnType<typeof setTimeout> | undefined;
  ctx.onLeave(() => clearTimeout(timer));

  const draw = ([refund, att, ev]: typeof data) => {
    fill(heading, 'Refund ', h('span', { class: 'mono' }, refund.id), ' ', statusBadge(refund.status));
    fill(summary, h('h2', { id: 'summary-h' }, 'Details'), details(refund));
    fill(attempts, h('h2', { id: 'attempts-h' }, `Provider attempts (${att.data.length})`), attemptsTable(att.data));
    fill(timeline, h('h2', { id: 'timeline-h' }, 'Timeline'), events(ev.data));
    // The action buttons are rebuilt only when they change, so a poll never steals focus.
    const allowed = actionsFor(me, refund);
    const key = `${refund.status}|${allowed.join(',')}`;
    if (key !== shownActions) {
      shownActions = key;
      drawActions(allowed);
    }
    live.textContent = isFinal(refund.status)
      ? `Final status: ${refund.status.replace(/_/g, ' ')}.`
      : `In progress (${refund.status.replace(/_/g, ' ')}): this page refreshes every ${POLL_MS / 1000} s.`;
    clearTimeout(timer);
    if (!isFinal(refund.status) && refund.status !== 'pending_approval' && refund.status !== 'requires_action') {
      timer = setTimeout(() => void refresh(), POLL_MS);
    }
  };

  const refresh = async () => {
    try {
      const next = await read();
      if (!signal.aborted) draw(next);
    } catch (err) {
      if (signal.aborted) return;
      fill(outcome, problemBox(err, 'Could not refresh'));
      timer = setTimeout(() => void refresh(), POLL_MS * 2);
    }
  };

  const drawActions = (allowed: Action[]) => {
    if (!allowed.length) {
      fill(actions);
      actions.hidden = true;
      return;
    }
    actions.hidden = false;
    const withComment = allowed.some((a) => a !== 'cancel') && can.opsActions(me);
    fill(
      actions,
      h('h2', { id: 'actions-h' }, 'Actions'),
      withComment ? field('Comment (optional, kept in the audit trail)', comment) : null,
      h(
        'div',
        { class: 'buttons' },
        allowed.map((a) =>
          h('button', { type: 'button', class: a === 'reject' || a === 'cancel' ? 'danger' : undefined, 'data-action': a, onclick: () => void act(a) }, ACTION_LABEL[a]),
        ),
      ),
    );
  };

  const act = async (action: Action) => {
    const confirmText = CONFIRM[action];
    if (confirmText && !window.confirm(confirmText)) return;
    const buttons = [...actions.querySelectorAll('button')];
    buttons.forEach((b) => (b.disabled = true));
    fill(outcome, h('p', { class: 'note', role: 'status' }, `${ACTION_LABEL[action]}: sending…`));
    try {
      const text = comment.value.trim();
      const body = action === 'cancel' ? undefined : text ? { comment: text } : {};
      const after = await api<Refund>(`${base}/${action}`, { method: 'POST', body, signal });
      comment.value = '';
      shownActions = '';
      // The page shows the new state before it says the action was accepted.
      await refresh();
      fill(outcome, h('p', { class: 'success', role: 'status' }, `${ACTION_LABEL[action]} accepted: the refund went to ${after.status.replace(/_/g, ' ')}.`));
    } catch (err) {
      if (signal.aborted) return;
      fill(outcome, problemBox(err, `${ACTION_LABEL[action]} refused`));
      buttons.forEach((b) => (b.disabled = false));
    }
  };

  // The outcome of an action stays outside the actions section: an action that leaves no
  // further action (e.g. an approved refund already processing) empties that section, and
  // its confirmation must still be seen (a flaky browser test caught it vanishing).
  fill(main, back, heading, live, summary, actions, outcome, attempts, timeline);
  draw(data);
}

function details(r: Refund): HTMLElement {
  const rows: Array<[string, Child]> = [
    ['Merchant', r.merchantId],
    ['Provider', r.provider],
    ['Payment', h('span', { class: 'mono' }, r.paymentId)],
    ['Amount', money(r.amount, r.currency)],
    ['Refunded', money(r.refundedAmount, r.currency)],
    ['Status', statusBadge(r.status)],
    ['Reason', r.reason],
    ['Provider refund id', r.providerRefundId ? h('span', { class: 'mono' }, r.providerRefundId) : '—'],
    ['Provider status', r.providerStatus ?? '—'],
    ['Provider attempts', String(r.attemptCount)],
    ['Created', when(r.createdAt)],
    ['Updated', when(r.updatedAt)],
    ['Completed', when(r.completedAt)],
  ];
  if (r.failureCode || r.failureMessage) {
    rows.push(['Failure', h('span', {}, h('span', { class: 'mono', 'data-testid': 'failure-code' }, r.failureCode ?? ''), r.failureCategory ? ` (${r.failureCategory})` : '', r.failureMessage ? ` — ${r.failureMessage}` : '')]);
  }
  if (r.review) rows.push(['Review flag', `${r.review.reason} (flagged ${r.review.flaggedAt})`]);
  if (r.description) rows.push(['Description', r.description]);
  if (Object.keys(r.metadata ?? {}).length) rows.push(['Metadata', h('pre', {}, JSON.stringify(r.metadata, null, 2))]);
  if (Object.keys(r.providerDetails ?? {}).length) rows.push(['Provider details', h('pre', {}, JSON.stringify(r.providerDetails, null, 2))]);
  return h('dl', { class: 'details' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function attemptsTable(rows: Attempt[]): HTMLElement {
  if (!rows.length) return empty('No provider call yet.');
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      h('thead', {}, h('tr', {}, ['#', 'Operation', 'Outcome', 'HTTP', 'Provider code', 'Latency', 'Request id', 'At'].map((c) => h('th', { scope: 'col' }, c)))),
      h(
        'tbody',
        {},
        rows.map((a) =>
          h(
            'tr',
            {},
            h('td', {}, String(a.number)),
            h('td', {}, a.operation),
            h('td', {}, a.outcome, a.errorMessage ? h('span', { class: 'hint' }, ` ${a.errorMessage}`) : null),
            h('td', {}, a.httpStatus === null ? '—' : String(a.httpStatus)),
            h('td', { class: 'mono' }, a.providerCode ?? '—'),
            h('td', { class: 'num' }, a.latencyMs === null ? '—' : `${a.latencyMs} ms`),
            h('td', { class: 'mono wrap' }, a.providerRequestId),
            h('td', {}, when(a.createdAt)),
          ),
        ),
      ),
    ),
  );
}

function events(rows: RefundEvent[]): HTMLElement {
  if (!rows.length) return empty('No status change recorded yet.');
  return h(
    'ol',
    { class: 'timeline', 'data-testid': 'timeline' },
    rows.map((e) => {
      const detail = Object.entries(e.detail ?? {}).filter(([, v]) => v !== null && v !== undefined && v !== '');
      return h(
        'li',
        {},
        h('div', { class: 'tl-when' }, when(e.createdAt)),
        h('div', { class: 'tl-what' }, e.from ? [statusBadge(e.from), h('span', { 'aria-label': 'to' }, ' → ')] : h('span', {}, 'created as '), statusBadge(e.to)),
        h('div', { class: 'tl-who' }, 'by ', h('span', { class: 'mono' }, e.actor)),
        detail.length
          ? h('dl', { class: 'tl-detail' }, detail.map(([k, v]) => [h('dt', {}, k), h('dd', {}, typeof v === 'string' ? v : JSON.stringify(v))]))
          : null,
      );
    }),
  );
}
