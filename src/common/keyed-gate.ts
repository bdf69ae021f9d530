import { Problem } from './problem.js';

/**
 * One task at a time per key, in this process; the others wait in memory, in arrival order.
 *
 * Why: every create on a payment is serialised by the payment row's lock in Postgres anyway.
 * Without this gate, a burst on one payment parks each waiting request on a pooled database
 * connection (blocked on the row lock), and a few hundred such requests starve the pool for
 * everything else — other payments, reads, the worker — until connection timeouts turn the
 * burst into a storm of 503s where nothing completes (the chaos suite's concurrency scenario
 * found exactly that). Waiting here costs no connection. Correctness still rests on the
 * database (the payment's guard version, or its row lock): other processes are not
 * serialised by this gate.
 *
 * Bounded: beyond `maxWaiting` queued tasks per key, or after `maxWaitMs` in the queue, a
 * request is refused with 503 service_unavailable (Retry-After) instead of piling up.
 */
export class KeyedGate {
  private readonly queues = new Map<string, { running: boolean; waiting: Array<() => void> }>();

  constructor(
    private readonly maxWaiting: number,
    private readonly maxWaitMs: number,
  ) {}

  /** Keys with a running or queued task (for tests and metrics). */
  get activeKeys(): number {
    return this.queues.size;
  }

  async run<T>(key: string, task: () => Promise<T>): Promise<T> {
    let q = this.queues.get(key);
    if (!q) {
      q = { running: false, waiting: [] };
      this.queues.set(key, q);
    }
    if (q.running) await this.wait(q);
    q.running = true;
    try {
      return await task();
    } finally {
      const next = q.waiting.shift();
      if (next) next();
      else {
        q.running = false;
        this.queues.delete(key);
      }
    }
  }

  private wait(q: { waiting: Array<() => void> }): Promise<void> {
    if (q.waiting.length >= this.maxWaiting) {
      return Promise.reject(busy());
    }
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const turn = () => {
        clearTimeout(timer);
        resolve();
      };
      timer = setTimeout(() => {
        const at = q.waiting.indexOf(turn);
        if (at >= 0) q.waiting.splice(at, 1);
        reject(busy());
      }, this.maxWaitMs);
      q.waiting.push(turn);
    });
  }
}

function busy(): Problem {
  return new Problem('service_unavailable', 'Too many concurrent requests for this payment; retry shortly with the same Idempotency-Key.', {
    retryAfterSeconds: 1,
  });
}
