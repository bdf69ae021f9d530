import { Decimal } from 'decimal.js';

/**
 * Money is a decimal end to end: strings in JSON, numeric in Postgres, Decimal in code.
 * This module is the only place that turns text into amounts and back.
 */
export const Money = Decimal.clone({ precision: 60, rounding: Decimal.ROUND_HALF_EVEN, toExpNeg: -60, toExpPos: 60 });
export type Money = Decimal;

/** Plain decimal literal: digits, optional fraction; no sign, exponent or spaces. */
const DECIMAL_RE = /^(0|[1-9]\d{0,19})(\.\d{1,18})?$/;

export function isDecimalString(value: unknown): value is string {
  return typeof value === 'string' && DECIMAL_RE.test(value);
}

export function money(value: string | Decimal): Decimal {
  return new Money(value);
}

export function decimalPlaces(value: string): number {
  const dot = value.indexOf('.');
  return dot < 0 ? 0 : value.length - dot - 1;
}

/** Canonical text of an amount: no exponent, no trailing zeros ("12.50" -> "12.5", "0.00" -> "0"). */
export function formatAmount(value: string | Decimal): string {
  const d = value instanceof Decimal ? value : new Money(value);
  return d.toFixed();
}

/** Amount with a fixed number of decimals, for providers that expect it ("12.5" -> "12.50"). */
export function formatFixed(value: string | Decimal, places: number): string {
  const d = value instanceof Decimal ? value : new Money(value);
  return d.toFixed(places);
}
