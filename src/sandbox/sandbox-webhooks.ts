import { setMaxListeners } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import type { Logger } from '@nestjs/common';
import type { Database } from '../database/database.js';

/** Batches one round of deliveries may send before the loop's other steps get their turn... */
const MAX_BATCHES_PER_ROUND = 25;
/**
 * ...and batches in flight at once in one process. A batch ends when its slowest delivery
 * does, so one batch at a time capped a process at `batch` ÷ that time: under the
 * benchmark's load the webhooks fell seconds behind the refunds they report, and our
 * service polled for what a webhook would have told it (docs/performance.md, finding 52).
 */
export const MAX_LANES = 4;
/** ...and how long it may go on starting new ones. */
const MAX_ROUND_MS = 5_000;

/**
 * Keep-alive sockets of a webhook sender. Idle sockets close after FREE_SOCKET_MS, before
 * the 5 s keep-alive timeout of a Node receiver (ours included), so a delivery is not
 * written into a socket the receiver is closing.
 *
 * At most MAX_SOCKETS_PER_RECEIVER connections per receiver; further deliveries wait for a
 * free one. Uncapped, a batch that found the pool short opened tens of connections at once
 * (100 in one burst), and a Node receiver accepts one connection per turn of its event loop
 * (libuv since 1.45): on a loaded machine the last of a burst waited in its accept queue past
 * the delivery timeout, unanswered, and was sent again (docs/performance.md, findings 55
 * and 57). Capped, a run opened 116 connections in all instead of 887, and none timed out.
 * Each emulator's deliveries have a pool of their own (WebhookDeliveries), so one emulator's
 * backlog does not hold another's deliveries waiting for a connection.
 */
const FREE_SOCKET_MS = 4_000;
export const MAX_SOCKETS_PER_RECEIVER = 64;
export interface WebhookAgents {
  http: http.Agent;
  https: https.Agent;
}
export function webhookAgents(): WebhookAgents {
  return {
    http: new http.Agent({ keepAlive: true, timeout: FREE_SOCKET_MS, maxSockets: MAX_SOCKETS_PER_RECEIVER }),
    https: new https.Agent({ keepAlive: true, timeout: FREE_SOCKET_MS, maxSockets: MAX_SOCKETS_PER_RECEIVER }),
  };
}
/** Bytes of the receiver's answer kept (an acknowledgement is a few dozen; errors keep 200 characters). */
const MAX_ANSWER_BYTES = 2 * 1024;

/**
 * POSTs one delivery with node:http and answers the receiver's status and text (its first
 * MAX_ANSWER_BYTES; the rest is read and dropped). Redirects are not followed (a provider
 * does not follow them either). Failures are errors whose message starts with the socket's
 * code where there is one ("ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:9"), as they are
 * recorded in the webhook's last_error. Not fetch(): undici's fetch, with the
 * abort signals it needs, was ~17 % of an emulator's CPU under the benchmark's load, the
 * largest item after the RSA signatures (docs/performance.md, finding 55).
 */
export function postWebhook(
  url: string,
  body: string,
  headers: Record<string, string>,
  timeoutMs: number,
  shutdown: AbortSignal,
  agents: WebhookAgents,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const secure = target.protocol === 'https:';
    if (!secure && target.protocol !== 'http:') throw new Error(`unsupported URL scheme ${target.protocol}`);
    if (shutdown.aborted) throw new Error('aborted: shutting down');
    const payload = Buffer.from(body, 'utf8');
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    const settle = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      outcome();
    };
    const req = (secure ? https : http).request(target, {
      method: 'POST',
      agent: secure ? agents.https : agents.http,
      headers: { 'content-type': 'application/json', 'content-length': String(payload.length), ...headers },
      signal: shutdown,
    });
    // The timeout runs from when the request has a connection: a wait for a free one (the
    // pool's cap) is not the receiver's fault and is not counted as a failed attempt. The
    // wait is bounded: every delivery ahead holds its connection for at most the timeout.
    req.once('socket', () => {
      if (!settled) timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    });
    const fail = (err: Error & { code?: string }): void =>
      settle(() => reject(err.code && !err.message.startsWith(err.code) ? new Error(`${err.code}: ${err.message}`, { cause: err }) : err));
    req.on('error', fail);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let length = 0;
      res.on('data', (chunk: Buffer) => {
        if (length >= MAX_ANSWER_BYTES) return;
        const kept = chunk.subarray(0, MAX_ANSWER_BYTES - length);
        chunks.push(kept);
        length += kept.length;
      });
      res.on('end', () => settle(() => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') })));
      // A connection cut mid-answer errors ("aborted") before it closes. The close handler is
      // what settles when nothing else does: once the answer has begun, the timer's destroy()
      // of the request no longer reaches the response.
      res.on('error', fail);
      res.on('close', () => settle(() => reject(new Error('the connection closed before the answer ended'))));
    });
    req.end(payload);
  });
}

/** What every claimed delivery carries; an emulator's table adds the columns it signs. */
export interface DueWebhook {
  id: string;
  url: string;
  attempts: number;
}

/** One emulator's webhook table and delivery rules. */
export interface WebhookDeliveryRules<Row extends DueWebhook> {
  /** The table, e.g. `sandbox.lean_webhooks`: id, url, status, attempts, next_attempt_at, last_error, delivered_at. */
  table: string;
  /** Columns claimed besides id, url and attempts: what `request` builds the attempt from. */
  columns: readonly string[];
  /** Deliveries claimed per round, sent concurrently. */
  batch: number;
  /** Upper bound of one delivery; a receiver that does not answer in time counts as failed. */
  timeoutMs: number;
  /**
   * A claimed delivery is invisible to other processes this long; it must exceed the time a
   * whole batch may take (the wait for a connection and its deliveries' timeout, checked in
   * the constructor, and recording failures), since a batch's successes are recorded
   * together when it ends.
   */
  leaseMs: number;
  /** One attempt's body and headers (content-type aside); a throw counts as a failed attempt. */
  request(row: Row): Promise<{ body: string; headers: Record<string, string> }>;
  /** Whether the receiver's answer acknowledges the delivery. */
  acknowledged(status: number, text: string): boolean;
  /** Delay before the next attempt after `attempts` failed ones; undefined: give up (FAILED). */
  retryDelay(attempts: number): number | undefined;
  /** Attempts in all before giving up (for the log). */
  maxAttempts: number;
}

/**
 * Delivers an emulator's due webhooks, one round at a time, from any number of processes:
 * rows are claimed with SKIP LOCKED and a lease, so processes claim disjoint rows and a
 * process that dies mid-delivery leaves its rows to be retried after the lease.
 */
export class WebhookDeliveries<Row extends DueWebhook> {
  /** This emulator's connections to the receivers (see webhookAgents()). */
  private readonly agents = webhookAgents();

  constructor(
    private readonly db: Database,
    private readonly logger: Logger,
    private readonly rules: WebhookDeliveryRules<Row>,
  ) {
    // A delivery may wait for a connection behind the others in flight (each holding one for
    // at most the timeout) before its own timeout starts; the lease must outlast both.
    const turns = Math.ceil((MAX_LANES * rules.batch) / MAX_SOCKETS_PER_RECEIVER);
    if (rules.leaseMs <= turns * rules.timeoutMs) {
      throw new Error(`${rules.table}: a lease of ${rules.leaseMs} ms does not outlast ${turns} delivery timeouts of ${rules.timeoutMs} ms`);
    }
  }

  /**
   * Sends the due deliveries in batches (each batch concurrently, up to MAX_LANES batches at
   * once), until fewer than a batch were due or MAX_BATCHES_PER_ROUND batches went;
   * `shutdown` interrupts them uncounted.
   * One batch per round capped an emulator at about a hundred webhooks a second, so under the
   * benchmark's load they queued up behind the refunds they report (docs/performance.md).
   */
  async deliverDue(shutdown: AbortSignal): Promise<void> {
    // Every delivery in flight listens on the shutdown signal (postWebhook's `signal`): up to
    // MAX_LANES batches of them, beyond the default of 10 listeners that would warn of a leak.
    setMaxListeners(MAX_LANES * this.rules.batch + 10, shutdown);
    // Bounded in time too, so the loop's other steps (settling) are not held up for long
    // behind a backlog of slow receivers.
    const until = Date.now() + MAX_ROUND_MS;
    let batches = 0;
    let failed: { error: unknown } | undefined;
    const lanes: Array<Promise<void>> = [];
    // A lane sends one batch after another while they come back full. A full claim means a
    // backlog, so it opens another lane (up to MAX_LANES) before its own batch is sent: an
    // idle emulator still makes one claim per round, a busy one keeps several batches going.
    const lane = async (): Promise<void> => {
      while (!failed && batches < MAX_BATCHES_PER_ROUND && !shutdown.aborted && Date.now() < until) {
        batches++;
        const full = await this.deliverBatch(shutdown, open);
        if (!full) return;
      }
    };
    // Each lane's failure (a lost database) is caught as it starts: awaited one after another
    // below, a later lane's rejection would otherwise go unhandled (and end the process) while
    // an earlier one is awaited. The round fails with the first error once every lane is done,
    // so none is still at work when the loop is told the round is over (shutdown waits on it).
    const open = (): void => {
      if (lanes.length >= MAX_LANES) return;
      lanes.push(
        lane().catch((error: unknown) => {
          failed ??= { error };
        }),
      );
    };
    open();
    // Lanes are added while earlier ones run; wait for every one, including those.
    for (let i = 0; i < lanes.length; i++) await lanes[i];
    if (failed) throw failed.error;
  }

  /**
   * Claims up to a batch of due deliveries and sends them; whether the claim was a full batch
   * (`onFull` is called as soon as it is known, before the sends).
   */
  private async deliverBatch(shutdown: AbortSignal, onFull: () => void): Promise<boolean> {
    const { table, columns, batch, leaseMs } = this.rules;
    // Claim by pushing next_attempt_at past the lease: the row stays PENDING, so a crash
    // mid-delivery only delays it. SKIP LOCKED lets concurrent processes claim disjoint rows.
    // The batch is picked in a MATERIALIZED CTE, which runs once. As `WHERE w.id IN (SELECT
    // ... LIMIT $1 FOR UPDATE SKIP LOCKED)` Postgres may run the sub-select again while the
    // update goes on, and each run skips the rows this statement has already updated and
    // locks the next ones: claims of 100, 150 and 200 rows with a batch of 50 under the
    // benchmark's load, sent all at once (docs/performance.md, finding 57).
    const claimed = await this.db.query<Row>(
      `WITH due AS MATERIALIZED (
         SELECT id FROM ${table}
          WHERE status = 'PENDING' AND next_attempt_at <= now()
          ORDER BY next_attempt_at, id
          LIMIT $1
          FOR UPDATE SKIP LOCKED)
       UPDATE ${table} w
          SET next_attempt_at = now() + $2 * interval '1 millisecond'
         FROM due
        WHERE w.id = due.id
        RETURNING ${['id', 'url', 'attempts', ...columns].map((column) => `w.${column}`).join(', ')}`,
      [batch, leaseMs],
    );
    const full = claimed.length >= batch;
    if (full) onFull();
    // deliver() never throws (a failure it cannot record is logged), so every acknowledged
    // delivery of the batch reaches the statement below.
    const acknowledged = await Promise.all(claimed.map((delivery) => this.deliver(delivery, shutdown)));
    const delivered = claimed.filter((_, i) => acknowledged[i]);
    // The batch's successes in one statement (a failure is recorded on its own, as it happens).
    if (delivered.length > 0) {
      await this.db.query(
        `UPDATE ${this.rules.table} w SET status = 'DELIVERED', attempts = d.attempts, delivered_at = now(), last_error = NULL
           FROM unnest($1::bigint[], $2::int[]) AS d(id, attempts) WHERE w.id = d.id`,
        [delivered.map((d) => d.id), delivered.map((d) => d.attempts + 1)],
      );
    }
    return full;
  }

  /** One attempt; true when the receiver acknowledged it (deliverBatch() records those). */
  private async deliver(delivery: Row, shutdown: AbortSignal): Promise<boolean> {
    let error: string | undefined;
    try {
      const { body, headers } = await this.rules.request(delivery);
      const answer = await postWebhook(delivery.url, body, headers, this.rules.timeoutMs, shutdown, this.agents);
      if (!this.rules.acknowledged(answer.status, answer.text)) error = `HTTP ${answer.status}: ${answer.text.slice(0, 200)}`;
    } catch (err) {
      if (shutdown.aborted) {
        // Interrupted by our own shutdown: not the receiver's fault, so release it uncounted.
        await this.db
          .query(`UPDATE ${this.rules.table} SET next_attempt_at = now() WHERE id = $1`, [delivery.id])
          .catch(() => undefined);
        return false;
      }
      // postWebhook's messages carry the socket's code where there is one.
      error = (err as Error).message;
    }
    if (error === undefined) return true;
    try {
      await this.recordFailure(delivery, error);
    } catch (err) {
      // The row stays claimed and is tried again when its lease ends.
      this.logger.warn(`could not record the failed delivery of webhook ${delivery.id}: ${(err as Error).message}`);
    }
    return false;
  }

  private async recordFailure(delivery: Row, error: string): Promise<void> {
    const attempts = delivery.attempts + 1;
    const retryIn = this.rules.retryDelay(attempts);
    if (retryIn === undefined) {
      this.logger.warn(`webhook ${delivery.id} failed after ${this.rules.maxAttempts} attempts: ${error}`);
    }
    await this.db.query(
      `UPDATE ${this.rules.table}
          SET attempts = $2, last_error = $3,
              status = CASE WHEN $4::int IS NULL THEN 'FAILED' ELSE 'PENDING' END,
              next_attempt_at = now() + coalesce($4::int, 0) * interval '1 millisecond'
        WHERE id = $1`,
      [delivery.id, attempts, error.slice(0, 1000), retryIn ?? null],
    );
  }
}
