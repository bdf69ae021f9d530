/**
 * Formula-injection guard for CSV cells (OWASP "CSV injection").
 *
 * A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` (and, in some, a leading
 * tab or carriage return, or the full-width forms `＝ ＋ － ＠` that Apple Numbers
 * normalises) as a formula. Such a cell is written with a leading `'`, which
 * spreadsheets take as "this is text" and do not display. A cell that itself starts with
 * `'` gets one more, so the rule can always be undone exactly: **a cell that starts with
 * `'` had one `'` added; drop it**. Every other cell is written as it is.
 *
 * Amounts are never negative (the schema forbids it) and timestamps start with a digit, so
 * no number a finance tool reads is ever changed by this.
 */
const TRIGGERS = new Set(['=', '+', '-', '@', '\t', '\r', '\uFF1D', '\uFF0B', '\uFF0D', '\uFF20', "'"]);

export function escapeCell(value: string): string {
  return value.length > 0 && TRIGGERS.has(value[0]) ? `'${value}` : value;
}

/** The inverse of escapeCell, for consumers (and the tests). */
export function unescapeCell(value: string): string {
  return value.startsWith("'") ? value.slice(1) : value;
}
