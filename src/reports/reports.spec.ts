import { describe, expect, it } from 'vitest';
import type { FieldError } from '../common/problem.js';
import { Problem } from '../common/problem.js';
import { escapeCell, unescapeCell } from './csv-cell.js';
import { buildFilter, normaliseInstant } from './report-filter.js';
import { DEFAULT_GROUP_BY, parseGroupBy } from './reports.service.js';

describe('escapeCell', () => {
  it('prefixes formula triggers (and a leading quote) with one quote, and nothing else', () => {
    for (const v of ['=1+1', '+1', '-1', '@SUM(A1)', '\tx', '\rx', '\uFF1D1', "'x"]) expect(escapeCell(v)).toBe(`'${v}`);
    for (const v of ['', '0.1', '12.5', '2025-01-31T00:00:00.000Z', 'M1', 'a=b', 'x-1', ' =1']) expect(escapeCell(v)).toBe(v);
  });

  it('is undone exactly by dropping one leading quote', () => {
    for (const v of ['=1', "'=1", "''", "'", 'plain', '-', '']) expect(unescapeCell(escapeCell(v))).toBe(v);
  });
});

describe('parseGroupBy', () => {
  it('defaults to the contract grouping; empty means one total row', () => {
    expect(parseGroupBy(undefined)).toEqual(DEFAULT_GROUP_BY);
    expect(parseGroupBy('')).toEqual([]);
    expect(parseGroupBy('day, merchant')).toEqual(['day', 'merchant']);
  });

  it('rejects unknown and repeated columns as validation_failed', () => {
    for (const bad of ['provider,colour', 'day,day', 'merchantId', ',']) {
      expect(() => parseGroupBy(bad)).toThrow(Problem);
      try {
        parseGroupBy(bad);
      } catch (err) {
        expect((err as Problem).code).toBe('validation_failed');
      }
    }
  });
});

describe('report filters', () => {
  it('reads dates and offset-less times as UTC', () => {
    const errors: FieldError[] = [];
    expect(normaliseInstant('2025-03-01', 'from', errors)).toBe('2025-03-01T00:00:00Z');
    expect(normaliseInstant('2025-03-01T10:00', 'from', errors)).toBe('2025-03-01T10:00Z');
    expect(normaliseInstant('2025-03-01T10:00:00.123456+04:00', 'from', errors)).toBe('2025-03-01T10:00:00.123456+04:00');
    expect(errors).toEqual([]);
    expect(normaliseInstant('2025-W09', 'from', errors)).toBeUndefined();
    expect(normaliseInstant('2025-02-30', 'to', errors)).toBeUndefined();
    expect(errors.map((e) => e.field)).toEqual(['from', 'to']);
  });

  it('builds parameterised clauses and refuses unknown values', () => {
    expect(buildFilter({ from: '2025-01-01', to: '2025-02-01', provider: 'cobo,lean', status: 'failed', merchantId: 'M1' })).toEqual({
      where:
        'WHERE created_at >= $1::timestamptz AND created_at < $2::timestamptz AND provider = ANY($3::text[]) AND status = ANY($4::text[]) AND merchant_id = $5',
      params: ['2025-01-01T00:00:00Z', '2025-02-01T00:00:00Z', ['cobo', 'lean'], ['failed'], 'M1'],
    });
    expect(buildFilter({})).toEqual({ where: '', params: [] });
    expect(() => buildFilter({ provider: 'stripe' })).toThrow(Problem);
    expect(() => buildFilter({ from: '2025-02-01', to: '2025-01-01' })).toThrow(Problem);
  });
});
