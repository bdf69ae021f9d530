import { Logger } from '@nestjs/common';
import { afterEach, describe, expect, it } from 'vitest';
import { LoopStep, SandboxLoop } from './sandbox-loop.js';

/** A loop whose timer never fires during a test: any round after the first came from wake(). */
class CountingLoop extends SandboxLoop {
  rounds = 0;
  /** Resolves the round in flight when set. */
  hold?: Promise<void>;

  constructor() {
    super(new Logger('test'), 60_000);
  }

  protected steps(): LoopStep[] {
    return [
      {
        what: 'count',
        run: async () => {
          this.rounds++;
          await this.hold;
        },
      },
    ];
  }
}

async function until(what: string, ok: () => boolean): Promise<void> {
  const deadline = Date.now() + 2_000;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('SandboxLoop.wake', () => {
  const loops: CountingLoop[] = [];
  afterEach(async () => {
    await Promise.all(loops.splice(0).map((l) => l.onModuleDestroy()));
  });

  it('starts a round at once instead of at the next tick', async () => {
    const loop = new CountingLoop();
    loops.push(loop);
    loop.onApplicationBootstrap();
    await until('the first round', () => loop.rounds === 1);
    loop.wake();
    await until('a woken round', () => loop.rounds === 2);
  });

  it('runs one more round right after the one in flight when woken during it', async () => {
    const loop = new CountingLoop();
    loops.push(loop);
    let release!: () => void;
    loop.hold = new Promise((r) => (release = r));
    loop.onApplicationBootstrap();
    await until('the first round', () => loop.rounds === 1);
    loop.wake();
    loop.wake();
    loop.hold = undefined;
    release();
    await until('the round after it', () => loop.rounds === 2);
    // Two wakes during one round make one more round, not two.
    await new Promise((r) => setTimeout(r, 100));
    expect(loop.rounds).toBe(2);
  });

  it('does nothing before the loop started, so bootstrap does not start a second chain of rounds', async () => {
    const loop = new CountingLoop();
    loops.push(loop);
    loop.wake();
    await new Promise((r) => setTimeout(r, 100));
    expect(loop.rounds).toBe(0);
  });

  it('does nothing once stopped', async () => {
    const loop = new CountingLoop();
    loop.onApplicationBootstrap();
    await until('the first round', () => loop.rounds === 1);
    await loop.onModuleDestroy();
    loop.wake();
    await new Promise((r) => setTimeout(r, 100));
    expect(loop.rounds).toBe(1);
  });
});
