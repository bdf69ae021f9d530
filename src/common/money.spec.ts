import { describe, expect, it } from 'vitest';
import { decimalPlaces, formatAmount, formatFixed, isDecimalString, money } from './money.js';

describe('money', () => {
  it('accepts only plain decimal literals', () => {
    for (const ok of ['0', '1', '10.5', '0.00000001', '12345678901234567890.123456789012345678']) {
      expect(isDecimalString(ok)).toBe(true);
    }
    for (const bad of ['', '-1', '+1', '1e3', '0.1e1', '01', '1.', '.5', ' 1', 'NaN', 'Infinity', '1,5', '-0', 12 as unknown as string]) {
      expect(isDecimalString(bad)).toBe(false);
    }
  });

  it('adds without binary rounding', () => {
    expect(formatAmount(money('0.1').plus('0.2'))).toBe('0.3');
    const ten = Array.from({ length: 10 }, () => '10.01').reduce((a, b) => a.plus(b), money('0'));
    expect(formatAmount(ten)).toBe('100.1');
  });

  it('formats canonically and with fixed places', () => {
    expect(formatAmount('12.50')).toBe('12.5');
    expect(formatAmount('0.000')).toBe('0');
    expect(formatFixed('12.5', 8)).toBe('12.50000000');
    expect(decimalPlaces('1.230')).toBe(3);
    expect(decimalPlaces('7')).toBe(0);
  });
});
