import { describe, expect, it } from 'vitest';
import { KeyedGate } from './keyed-gate.js';
import { Problem } from './problem.js';

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

describe('KeyedGate', () => {
  it('runs one task per key at a time, in arrival order, and different keys in parallel', async () => {
    const gate = new KeyedGate(100, 5_000);
    const log: string[] = [];
    let running = 0;
    let maxRunning = 0;
    const task = (name: string) => async () => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      log.push(`start ${name}`);
      await tick();
      log.push(`end ${name}`);
      running--;
      return name;
    };
    const a = await Promise.all([gate.run('p1', task('a1')), gate.run('p1', task('a2')), gate.run('p1', task('a3'))]);
    expect(a).toEqual(['a1', 'a2', 'a3']);
    expect(log).toEqual(['start a1', 'end a1', 'start a2', 'end a2', 'start a3', 'end a3']);
    expect(maxRunning).toBe(1);

    maxRunning = 0;
    await Promise.all([gate.run('x', task('x')), gate.run('y', task('y'))]);
    expect(maxRunning).toBe(2);
    expect(gate.activeKeys).toBe(0);
  });

  it('passes the turn on when a task throws', async () => {
    const gate = new KeyedGate(100, 5_000);
    const first = gate.run('k', async () => {
      await tick();
      throw new Error('boom');
    });
    const second = gate.run('k', async () => 'ok');
    await expect(first).rejects.toThrow('boom');
    await expect(second).resolves.toBe('ok');
    expect(gate.activeKeys).toBe(0);
  });

  it('refuses with 503 service_unavailable beyond maxWaiting or after maxWaitMs', async () => {
    const gate = new KeyedGate(1, 30);
    let release!: () => void;
    const blocker = gate.run('k', () => new Promise<void>((r) => (release = r)));
    const waiting = gate.run('k', async () => 'second');
    const refused = gate.run('k', async () => 'third');
    await expect(refused).rejects.toBeInstanceOf(Problem);
    await expect(refused).rejects.toMatchObject({ code: 'service_unavailable' });
    // The waiting one times out after maxWaitMs and leaves the queue.
    await expect(waiting).rejects.toMatchObject({ code: 'service_unavailable' });
    release();
    await blocker;
    await expect(gate.run('k', async () => 'later')).resolves.toBe('later');
    expect(gate.activeKeys).toBe(0);
  });
});
