/**
 * The limits every batcher of the service uses: `size` items at most, and two batches of a
 * kind in flight per process (measured best in docs/performance.md, round 3): a few batches
 * at once, each one backend's work, keep Postgres busy, and the requests that arrive
 * meanwhile make up the next ones. Size 1 turns batching off: each request is its own
 * statement, as many at once as the pool allows.
 */
export function batchLimits(size: number): { maxBatch: number; maxInFlight: number } {
  return { maxBatch: size, maxInFlight: size === 1 ? Number.POSITIVE_INFINITY : BATCHES_IN_FLIGHT };
}

const BATCHES_IN_FLIGHT = 2;

/**
 * Errors of a batched statement that one item may have caused (a value Postgres refuses, a
 * constraint, a trigger's exception) or that an item alone would not meet (deadlock,
 * serialization failure): the batch is then retried item by item. Other errors (the
 * database away) would fail each item alone too.
 */
export function oneItemMayHaveFailed(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && /^(22|23|40|P0)/.test(code);
}

/**
 * Runs many small requests of one kind as few batches (group commit), in this process.
 *
 * Why: under load most of a refund create's database cost is not the work on its rows but
 * the statement around them: a round trip, the backend's wake-up, executor start-up, a
 * commit and its WAL flush. Creates that arrive while earlier batches are in flight wait
 * here and then go to Postgres together, as one statement over arrays. Nothing waits on a
 * timer: with fewer than `maxInFlight` batches running, a request leaves at once, alone, so
 * an idle service answers as fast as before and a busy one pays the fixed cost once per batch.
 *
 * `keyOf` (optional): at most one item per key in a batch; a second item with the same key
 * waits for a later batch. A batch must not hold two creates on one payment: both would be
 * checked against the same snapshot.
 *
 * When a batch of several items fails with an error `splitOn` says one item may have caused
 * (default: any), its items are tried again alone, one after the other (still in the batch's
 * in-flight slot, so a refused batch never multiplies the load), and one bad item fails only
 * its own request. Other errors (the database is away) fail the whole batch at once, as they
 * would have failed each request. Retrying is safe only where a failed batch wrote nothing
 * (one statement, which Postgres applies all or nothing).
 */
export class Batcher<I, O> {
  private queue: Array<{ item: I; since: number; resolve: (o: O) => void; reject: (err: unknown) => void }> = [];
  private inFlight = 0;

  constructor(
    private readonly run: (items: I[]) => Promise<O[]>,
    private readonly opts: {
      maxBatch: number;
      maxInFlight: number;
      keyOf?: (item: I) => string;
      /** Whether a failed batch is retried item by item (default: always). */
      splitOn?: (err: unknown) => boolean;
      /** Called with the size of every batch sent (for metrics). */
      onBatch?: (size: number) => void;
      /** Called when a failed batch is retried item by item (for metrics). */
      onSplit?: (size: number) => void;
      /**
       * Items that have waited longer than this for a batch are failed instead of sent
       * (for callers that stop waiting after a timeout: without it their items would still
       * pile up here while the batches in flight hang, and be sent long after).
       */
      maxWaitMs?: number;
    },
  ) {}

  /** Items waiting for a batch (for tests and metrics). */
  get waiting(): number {
    return this.queue.length;
  }

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, since: performance.now(), resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.opts.maxInFlight && this.queue.length > 0) {
      const batch = this.take();
      if (batch.length === 0) break;
      this.inFlight++;
      // runBatch settles every entry's promise and never rejects itself.
      void this.runBatch(batch).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  /** Up to maxBatch queued entries, in arrival order, at most one per key. */
  private take() {
    this.dropExpired();
    const { maxBatch, keyOf } = this.opts;
    if (!keyOf) return this.queue.splice(0, maxBatch);
    const keys = new Set<string>();
    const batch: typeof this.queue = [];
    const rest: typeof this.queue = [];
    for (const entry of this.queue) {
      const key = keyOf(entry.item);
      if (batch.length < maxBatch && !keys.has(key)) {
        keys.add(key);
        batch.push(entry);
      } else {
        rest.push(entry);
      }
    }
    this.queue = rest;
    return batch;
  }

  /** Fails the entries that have waited longer than maxWaitMs (the queue is in arrival order). */
  private dropExpired(): void {
    const { maxWaitMs } = this.opts;
    if (maxWaitMs === undefined) return;
    const cutoff = performance.now() - maxWaitMs;
    if (this.queue.length === 0 || this.queue[0]!.since >= cutoff) return;
    const kept: typeof this.queue = [];
    for (const entry of this.queue) {
      if (entry.since < cutoff) entry.reject(new Error(`waited over ${maxWaitMs} ms for a batch`));
      else kept.push(entry);
    }
    this.queue = kept;
  }

  private async runBatch(batch: typeof this.queue): Promise<void> {
    try {
      this.opts.onBatch?.(batch.length);
    } catch {
      // metrics must not lose a batch
    }
    let outs: O[];
    try {
      outs = await this.runItems(batch.map((e) => e.item));
    } catch (err) {
      if (batch.length === 1 || !(this.opts.splitOn?.(err) ?? true)) {
        for (const e of batch) e.reject(err);
        return;
      }
      try {
        this.opts.onSplit?.(batch.length);
      } catch {
        // as above
      }
      // One item may be what failed the statement: each alone, so only its own request fails.
      for (const e of batch) {
        try {
          e.resolve((await this.runItems([e.item]))[0]!);
        } catch (itemErr) {
          e.reject(itemErr);
        }
      }
      return;
    }
    batch.forEach((e, i) => e.resolve(outs[i]!));
  }

  /** run(), with a synchronous throw or a wrong number of results as a rejection. */
  private async runItems(items: I[]): Promise<O[]> {
    const outs = await this.run(items);
    if (outs.length !== items.length) throw new Error(`batch of ${items.length} answered ${outs.length} results`);
    return outs;
  }
}
