import { api, type QueueHealth } from '../api.js';
import { fill, h } from '../dom.js';
import type { ViewContext } from '../main.js';
import { loading, problemBox } from '../ui.js';

const REFRESH_MS = 5_000;
const STATES = ['waiting', 'active', 'delayed', 'failed', 'completed'] as const;

/** Queue health from GET /v1/queues (ops, admin), refreshed every few seconds. */
export async function renderQueues(ctx: ViewContext): Promise<void> {
  const { main, signal } = ctx;
  const body = h('div', { 'aria-live': 'polite' }, loading('the queues'));
  const refreshButton = h('button', { type: 'button', class: 'secondary' }, 'Refresh now');
  fill(
    main,
    h('h1', {}, 'Queues'),
    h(
      'p',
      {},
      'Jobs per queue, read live from Redis. A refund waiting for its next provider check sits in ',
      h('em', {}, 'delayed'),
      '; a growing ',
      h('em', {}, 'waiting'),
      ' count or an old waiting job means the workers are behind. ',
      h('a', { href: '#/refunds?stuck=true' }, 'Stuck refunds'),
      ' · ',
      h('a', { href: '/ops/queues', target: '_blank', rel: 'noopener noreferrer' }, 'Bull Board (asks for the key again)'),
    ),
    h('div', { class: 'form-actions' }, refreshButton),
    body,
  );

  let timer: ReturnType<typeof setTimeout> | undefined;
  ctx.onLeave(() => clearTimeout(timer));
  let drawn = false;
  const load = async () => {
    clearTimeout(timer);
    try {
      const res = await api<{ data: QueueHealth[]; readAt: string }>('/v1/queues', { signal });
      if (signal.aborted) return;
      drawn = true;
      fill(body, table(res.data), h('p', { class: 'note' }, `Read at ${res.readAt.slice(11, 19)} UTC; refreshes every ${REFRESH_MS / 1000} s.`));
    } catch (err) {
      if (signal.aborted) return;
      // Keep the last good table and say why it is not current.
      const problem = problemBox(err, 'Could not read the queues');
      if (drawn) body.prepend(problem);
      else fill(body, problem);
    }
    if (!signal.aborted) timer = setTimeout(() => void load(), REFRESH_MS);
  };
  refreshButton.addEventListener('click', () => void load());
  await load();
}

function table(rows: QueueHealth[]): HTMLElement {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'queues' },
      h('caption', { class: 'visually-hidden' }, 'Jobs per queue and state'),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Queue'), STATES.map((s) => h('th', { scope: 'col', class: 'num' }, s)), h('th', { scope: 'col', class: 'num' }, 'Oldest waiting'))),
      h(
        'tbody',
        {},
        rows.map((q) =>
          h(
            'tr',
            { 'data-queue': q.name },
            h('th', { scope: 'row' }, q.name),
            STATES.map((s) => h('td', { class: `num${s === 'failed' && q.counts[s] > 0 ? ' warn' : ''}` }, String(q.counts[s]))),
            h('td', { class: `num${q.oldestWaitingSeconds > 60 ? ' warn' : ''}` }, q.oldestWaitingSeconds > 0 ? `${q.oldestWaitingSeconds} s` : '—'),
          ),
        ),
      ),
    ),
  );
}
