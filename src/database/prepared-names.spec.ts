import { describe, expect, it } from 'vitest';
import { PreparedNames } from './prepared-names.js';

describe('PreparedNames', () => {
  it('names a text the second time it is seen, and keeps that name', () => {
    const names = new PreparedNames(4);
    expect(names.nameFor('SELECT 1')).toBeUndefined();
    const name = names.nameFor('SELECT 1');
    expect(name).toMatch(/^rq1_\d+$/);
    expect(names.nameFor('SELECT 1')).toBe(name);
  });

  it('gives different texts different names', () => {
    const names = new PreparedNames(4);
    for (const sql of ['SELECT 1', 'SELECT 2', 'SELECT 1', 'SELECT 2']) names.nameFor(sql);
    expect(names.nameFor('SELECT 1')).not.toBe(names.nameFor('SELECT 2'));
  });

  it('names at most `capacity` texts; the rest stay unnamed', () => {
    const names = new PreparedNames(2);
    for (const sql of ['a', 'a', 'b', 'b', 'c', 'c', 'c']) names.nameFor(sql);
    expect(names.size).toBe(2);
    expect(names.nameFor('c')).toBeUndefined();
    expect(names.nameFor('a')).toBeDefined();
  });

  it('names nothing with capacity 0 (DB_PREPARED_STATEMENTS=false)', () => {
    const names = new PreparedNames(0);
    for (let i = 0; i < 5; i++) expect(names.nameFor('SELECT 1')).toBeUndefined();
  });

  it('forgets texts seen once in bulk, so its memory stays bounded', () => {
    const names = new PreparedNames(1);
    names.nameFor('x');
    for (let i = 0; i < 8; i++) names.nameFor(`once ${i}`);
    // 'x' was forgotten with the others: seeing it again counts as the first time.
    expect(names.nameFor('x')).toBeUndefined();
    expect(names.nameFor('x')).toBeDefined();
  });

  it('starts a new generation of names after reset(), so nothing stale is reused', () => {
    const names = new PreparedNames(4);
    names.nameFor('SELECT 1');
    const first = names.nameFor('SELECT 1');
    names.reset();
    expect(names.nameFor('SELECT 1')).toBeUndefined();
    const second = names.nameFor('SELECT 1');
    expect(second).toBeDefined();
    expect(second).not.toBe(first);
  });
});
