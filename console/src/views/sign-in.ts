import { api, ApiError, type Me, session } from '../api.js';
import { field, fill, h } from '../dom.js';
import { problemBox } from '../ui.js';

/**
 * Sign-in: the user pastes an API key. It is checked with GET /v1/me, then kept in
 * sessionStorage for this tab only. The field is a password field (not echoed, not
 * autocompleted), and the key is never shown again.
 */
export function renderSignIn(main: HTMLElement, notice: string | null, signedIn: (me: Me) => void): void {
  const input = h('input', {
    type: 'password',
    name: 'apiKey',
    autocomplete: 'off',
    spellcheck: 'false',
    autocapitalize: 'off',
    required: true,
    maxlength: '512',
  });
  const status = h('div', { class: 'form-status', 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    { class: 'card sign-in', novalidate: true },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'Paste an API key. It stays in this browser tab only and is forgotten when you sign out or close the tab.'),
    field('API key', input, 'Merchant, ops, finance or admin key, as issued by POST /v1/api-keys.'),
    submit,
    status,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    if (!key) {
      fill(status, h('p', { class: 'problem', role: 'alert' }, 'Enter an API key.'));
      input.focus();
      return;
    }
    submit.disabled = true;
    fill(status, h('p', { class: 'note', role: 'status' }, 'Checking the key…'));
    try {
      const me = await api<Me>('/v1/me', { key });
      session.save(key);
      input.value = '';
      signedIn(me);
    } catch (err) {
      fill(status, problemBox(err instanceof ApiError ? err : new ApiError(0, 'Sign-in failed', (err as Error).message, undefined)));
      input.select();
      input.focus();
    } finally {
      submit.disabled = false;
    }
  });
  fill(main, notice ? h('p', { class: 'notice', role: 'status' }, notice) : null, form);
}
