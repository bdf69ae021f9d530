import { api, ApiError, type Me, session, setUnauthorizedHandler } from './api.js';
import { fill, h } from './dom.js';
import { can } from './ui.js';
import { renderQueues } from './views/queues.js';
import { renderRefund } from './views/refund.js';
import { renderRefunds } from './views/refunds.js';
import { renderReports } from './views/reports.js';
import { renderSignIn } from './views/sign-in.js';

/** What a view gets: who is signed in, where to draw, and when to stop (navigation away). */
export interface ViewContext {
  me: Me;
  main: HTMLElement;
  params: URLSearchParams;
  signal: AbortSignal;
  /** Runs when the user leaves the view (timers, polls). */
  onLeave(fn: () => void): void;
}

const main = document.getElementById('main') as HTMLElement;
const top = document.getElementById('top') as HTMLElement;
let me: Me | null = null;
let leaving: Array<() => void> = [];
let controller = new AbortController();
/** Shown once on the sign-in page (why the user was signed out). */
let signInNotice: string | null = null;

export function navigate(hash: string): void {
  if (location.hash === hash) void route();
  else location.hash = hash;
}

function signOut(notice: string | null): void {
  session.clear();
  me = null;
  signInNotice = notice;
  navigate('#/sign-in');
}

setUnauthorizedHandler((err) => signOut(`Signed out: ${err.title}${err.detail ? ` (${err.detail})` : ''}`));

function header(): void {
  if (!me) {
    fill(top, h('span', { class: 'brand' }, 'Refund console'));
    return;
  }
  const current = location.hash.split('?')[0];
  const link = (href: string, text: string) =>
    h('a', { href, 'aria-current': current.startsWith(href) ? 'page' : undefined }, text);
  fill(
    top,
    h('a', { class: 'brand', href: '#/refunds' }, 'Refund console'),
    h(
      'nav',
      { 'aria-label': 'Main' },
      h(
        'ul',
        {},
        h('li', {}, link('#/refunds', 'Refunds')),
        can.queues(me) ? h('li', {}, link('#/queues', 'Queues')) : null,
        can.reports(me) ? h('li', {}, link('#/reports', 'Finance report')) : null,
      ),
    ),
    h(
      'span',
      { class: 'who', 'data-testid': 'who' },
      'Signed in as ',
      h('strong', {}, me.role),
      me.merchantId ? [' of ', h('strong', {}, me.merchantId)] : null,
    ),
    h('button', { type: 'button', class: 'secondary', onclick: () => signOut('Signed out.') }, 'Sign out'),
  );
}

/** Asks the API who the stored key is (after a reload). */
async function restore(): Promise<void> {
  if (me || !session.key()) return;
  try {
    me = await api<Me>('/v1/me');
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return; // handled: signed out
    throw err;
  }
}

async function route(): Promise<void> {
  for (const fn of leaving) fn();
  leaving = [];
  controller.abort();
  controller = new AbortController();
  const signal = controller.signal;

  const [path, qs] = (location.hash.replace(/^#/, '') || '/refunds').split('?');
  const params = new URLSearchParams(qs ?? '');
  try {
    await restore();
  } catch (err) {
    header();
    fill(main, h('h1', { tabindex: '-1' }, 'The service did not answer'), h('p', {}, (err as Error).message));
    return;
  }
  if (signal.aborted) return;

  if (!me) {
    header();
    const notice = signInNotice;
    signInNotice = null;
    renderSignIn(main, notice, (who) => {
      me = who;
      navigate('#/refunds');
    });
    main.querySelector('input')?.focus();
    return;
  }
  if (path === '/sign-in') return navigate('#/refunds');
  header();
  const ctx: ViewContext = { me, main, params, signal, onLeave: (fn) => leaving.push(fn) };
  const refundMatch = /^\/refunds\/([^/]+)$/.exec(path);
  if (path === '/refunds' || path === '/') await renderRefunds(ctx);
  else if (refundMatch) await renderRefund(ctx, decodeURIComponent(refundMatch[1]));
  else if (path === '/queues' && can.queues(me)) await renderQueues(ctx);
  else if (path === '/reports' && can.reports(me)) await renderReports(ctx);
  else {
    fill(main, h('h1', { tabindex: '-1' }, 'Page not found'), h('p', {}, h('a', { href: '#/refunds' }, 'Go to the refunds')));
  }
  if (!signal.aborted) focusHeading();
}

/** Moves focus to the page heading after a navigation, so keyboard and screen reader users start there. */
function focusHeading(): void {
  const h1 = main.querySelector('h1');
  if (h1) {
    h1.setAttribute('tabindex', '-1');
    h1.focus({ preventScroll: false });
  }
}

document.getElementById('skip-link')?.addEventListener('click', (ev) => {
  ev.preventDefault();
  main.focus();
});
window.addEventListener('hashchange', () => void route());
void route();
