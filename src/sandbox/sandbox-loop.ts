import type { Logger, OnApplicationBootstrap, OnModuleDestroy } from '@nestjs/common';

/** One step of a round: what it does (for the log when it fails), and the bounded work. */
export interface LoopStep {
  what: string;
  run: () => Promise<unknown>;
}

/**
 * The background half of an emulator: a periodic round of bounded steps (settle what is
 * due, deliver webhooks, ...) in every process that serves the emulator. A round starts
 * at bootstrap and `intervalMs` after the previous one ends, so rounds never overlap in a
 * process; across processes the steps must claim their work (row locks, leases).
 * Shutdown stops scheduling, aborts `shutdown.signal` and waits for the round in flight.
 */
export abstract class SandboxLoop implements OnApplicationBootstrap, OnModuleDestroy {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  /** wake() came during a round: start the next one right after it. */
  private again = false;
  /** Aborted when the module is destroyed: in-flight work stops waiting, new work is not started. */
  protected readonly shutdown = new AbortController();

  protected constructor(
    protected readonly logger: Logger,
    private readonly intervalMs: number,
  ) {}

  /** The steps of a round, run one after the other. */
  protected abstract steps(): LoopStep[];

  onApplicationBootstrap(): void {
    this.schedule(0);
  }

  async onModuleDestroy(): Promise<void> {
    this.shutdown.abort();
    clearTimeout(this.timer);
    await this.running;
  }

  protected get stopped(): boolean {
    return this.shutdown.signal.aborted;
  }

  /**
   * Starts a round now, or right after the one in flight: work is due that should not wait
   * for the timer. Before the loop started (bootstrap) it does nothing: starting here too
   * would run two chains of rounds side by side.
   */
  wake(): void {
    if (this.stopped || (this.timer === undefined && !this.running)) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.schedule(0);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.tick().finally(() => {
        this.running = undefined;
        const again = this.again;
        this.again = false;
        this.schedule(again ? 0 : this.intervalMs);
      });
    }, delayMs);
  }

  /** One round; never throws, so the loop keeps going through a database hiccup. */
  async tick(): Promise<void> {
    for (const step of this.steps()) {
      try {
        await step.run();
      } catch (err) {
        if (!this.stopped) this.logger.warn(`${step.what} failed: ${(err as Error).message}`);
      }
    }
  }
}
