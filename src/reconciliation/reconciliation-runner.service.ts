import { BeforeApplicationShutdown, Injectable, Logger } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { Database, type Sql } from '../database/database.js';
import type { ProviderRefundLookup, ProviderRefundRecord, RefundReference } from '../providers/provider.js';
import { ProvidersService } from '../providers/providers.service.js';
import { isFinal, type RefundStatus } from '../refunds/refund-status.js';
import {
  compareRefund,
  inWindow,
  looksLikeOurRequestId,
  type MismatchKind,
  type OurSide,
  ourView,
  theirView,
  type OurView,
  type TheirView,
} from './compare.js';
import { ProviderGaveUp, recordSourceFor, type RecordSource } from './record-sources.js';
import { ReconciliationSettings } from './reconciliation-settings.js';
import type { RunRow } from './reconciliation.service.js';

/** Our refunds (or earlier submissions) read per batch of the lookup phases. */
const LOOKUP_BATCH = 200;

/** Another worker took the run over (our lease expired): stop without touching it. */
class LostLease extends Error {}
/** This process is shutting down: hand the run back for another worker. */
class Interrupted extends Error {}

interface OurRow {
  id: string;
  status: RefundStatus;
  amount: string;
  refunded_amount: string;
  created_at: Date;
  created_key: string;
  provider_request_id: string | null;
  provider_refund_id: string | null;
  provider_state: 'not_sent' | 'unknown' | 'acknowledged';
  payment_id: string;
  provider_data: Record<string, unknown> | null;
}

/** An earlier submission of a refund (replaced by an ops retry), which we hold as failed. */
interface EarlierRow {
  provider_request_id: string;
  refund_id: string;
  amount: string;
  created_at: Date;
  payment_id: string;
  provider_data: Record<string, unknown> | null;
}

interface Finding {
  kind: MismatchKind;
  refund_id: string | null;
  provider_refund_id: string | null;
  provider_request_id: string | null;
  ours: OurView | null;
  theirs: TheirView | null;
  detail: string | null;
}

/** What one batch adds to the run: written atomically with its lease check. */
class Batch {
  checked = 0;
  matched = 0;
  records = 0;
  readonly findings: Finding[] = [];

  /** Compares a pair; counts it and keeps its mismatches. */
  compare(ours: OurSide, theirs: ProviderRefundRecord, ids: { refundId: string; requestId: string | null; detail?: string }): void {
    const kinds = compareRefund(ours, theirs);
    this.checked++;
    if (kinds.length === 0) this.matched++;
    for (const kind of kinds) {
      this.findings.push({
        kind,
        refund_id: ids.refundId,
        provider_refund_id: theirs.providerRefundId,
        provider_request_id: theirs.providerRequestId ?? ids.requestId,
        ours: ourView(ours),
        theirs: theirView(theirs),
        detail: ids.detail ?? null,
      });
    }
  }

  missingLocally(theirs: ProviderRefundRecord, detail: string): void {
    this.checked++;
    this.findings.push({
      kind: 'missing_locally',
      refund_id: null,
      provider_refund_id: theirs.providerRefundId,
      provider_request_id: theirs.providerRequestId,
      ours: null,
      theirs: theirView(theirs),
      detail,
    });
  }

  missingAtProvider(row: OurRow): void {
    this.checked++;
    this.findings.push({
      kind: 'missing_at_provider',
      refund_id: row.id,
      provider_refund_id: row.provider_refund_id,
      provider_request_id: row.provider_request_id,
      ours: ourView(ourSide(row)),
      theirs: null,
      detail: 'the provider has no refund with our request id',
    });
  }
}

function ourSide(row: Pick<OurRow, 'status' | 'amount' | 'refunded_amount'>): OurSide {
  return { status: row.status, amount: row.amount, refundedAmount: row.refunded_amount };
}

function referenceOf(row: { provider_request_id: string | null; provider_refund_id?: string | null; payment_id: string; provider_data: Record<string, unknown> | null }): RefundReference {
  return {
    providerRequestId: row.provider_request_id!,
    providerRefundId: row.provider_refund_id ?? null,
    paymentId: row.payment_id,
    paymentData: row.provider_data ?? {},
  };
}

/** Runs `fn` over `items` with at most `limit` in flight; results in input order. */
async function mapPool<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

/** The state of one execution of a run. */
class Execution {
  lost = false;
  constructor(
    readonly run: RunRow,
    readonly owner: string,
    private readonly stopping: () => boolean,
  ) {}

  get from(): Date {
    return this.run.from_at;
  }
  get to(): Date {
    return this.run.to_at;
  }

  readonly check = (): void => {
    if (this.lost) throw new LostLease('lease lost');
    if (this.stopping()) throw new Interrupted('shutting down');
  };
}

/**
 * Executes reconciliation runs (one per BullMQ job, job id = run id). The run row is the
 * truth: an execution claims it with a lease (renewed while it works), writes progress and
 * mismatches batch by batch under that lease, and ends it `completed` or `failed`. A crash,
 * a lost job or a shutdown leaves the lease to expire; the sweeper re-enqueues the run and
 * the next execution starts it again from the beginning (reading both sides is harmless).
 *
 * A run reads, never writes, the provider's side and our refunds: what it finds is
 * reported as mismatches, and a provider refund we do not have is never created here.
 */
@Injectable()
export class ReconciliationRunner implements BeforeApplicationShutdown {
  private readonly logger = new Logger('ReconciliationRunner');
  private stopping = false;

  constructor(
    private readonly db: Database,
    private readonly providers: ProvidersService,
    private readonly settings: ReconciliationSettings,
  ) {}

  beforeApplicationShutdown(): void {
    this.stopping = true;
  }

  /** Runs the run if it is due and nobody else holds it; returns quietly otherwise. */
  async execute(runId: string): Promise<void> {
    const owner = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    const run = await this.claim(runId, owner);
    if (!run) return;
    const exec = new Execution(run, owner, () => this.stopping);
    if (run.attempts > this.settings.maxRunAttempts) {
      await this.finish(exec, 'failed', `gave up after ${run.attempts - 1} interrupted executions`);
      return;
    }
    const heartbeat = setInterval(() => {
      this.renew(exec).catch((err) => this.logger.warn({ runId, err: (err as Error).message }, 'could not renew the run lease'));
    }, Math.max(250, Math.floor(this.settings.leaseMs / 3)));
    heartbeat.unref();
    try {
      await this.reconcile(exec);
      await this.finish(exec, 'completed', null);
      this.logger.log({ runId, provider: run.provider }, 'reconciliation run completed');
    } catch (err) {
      if (err instanceof LostLease) {
        this.logger.warn({ runId }, 'reconciliation run taken over by another worker; stopping');
      } else if (err instanceof ProviderGaveUp) {
        this.logger.warn({ runId, err: err.message }, 'reconciliation run failed');
        await this.finish(exec, 'failed', err.message);
      } else {
        // Interrupted, or unexpected (e.g. Postgres down): hand the run back; it restarts later.
        await this.release(exec).catch(() => undefined);
        if (!(err instanceof Interrupted)) throw err;
      }
    } finally {
      clearInterval(heartbeat);
    }
  }

  private async reconcile(exec: Execution): Promise<void> {
    const adapter = this.providers.find(exec.run.provider);
    if (!adapter || !adapter.isEnabled()) throw new ProviderGaveUp(`provider ${exec.run.provider} is not configured`);
    const source = recordSourceFor(adapter, this.settings, exec.check);
    if (!source) throw new ProviderGaveUp(`provider ${exec.run.provider} cannot be reconciled (no lookup)`);
    if (source.pages) {
      const slack = this.settings.slackMs;
      const read = { from: new Date(exec.from.getTime() - slack), to: new Date(exec.to.getTime() + slack) };
      for await (const records of source.pages(read)) {
        exec.check();
        await this.pairProviderRecords(exec, records);
      }
    }
    await this.lookUpUnpaired(exec, source);
    await this.lookUpEarlierSubmissions(exec, source);
  }

  /**
   * Phase 1 (providers with a list): pairs each provider record near the window with our row
   * by provider refund id, else by our request id, else by the request id of an earlier
   * submission of ours; an unpaired record of the window is `missing_locally`.
   */
  private async pairProviderRecords(exec: Execution, records: ProviderRefundRecord[]): Promise<void> {
    const { run, from, to } = exec;
    const near = records.filter((r) => inWindow(r.createdAt, from, to, this.settings.slackMs));
    await this.db.transaction(async (tx) => {
      const batch = new Batch();
      batch.records = records.length;
      // Each provider record once per run (offset paging may repeat one when new refunds arrive).
      const keyed = near.map((r) => ({
        r,
        key: r.providerRefundId ? `p:${r.providerRefundId}` : r.providerRequestId ? `pq:${r.providerRequestId}` : null,
      }));
      const fresh = await this.claimKeys(tx, run.id, keyed.flatMap((k) => (k.key ? [k.key] : [])));
      const todo = keyed.filter((k) => k.key === null || fresh.delete(k.key)).map((k) => k.r);

      const refundIds = todo.flatMap((r) => (r.providerRefundId ? [r.providerRefundId] : []));
      const requestIds = todo.flatMap((r) => (r.providerRequestId ? [r.providerRequestId] : []));
      const ours = todo.length
        ? await tx.query<OurRow>(
            `SELECT r.id, r.status, r.amount, r.refunded_amount, r.created_at, r.provider_request_id, r.provider_refund_id,
                    r.provider_state, r.payment_id
               FROM refunds r
              WHERE r.provider = $1 AND (r.provider_refund_id = ANY($2::text[]) OR r.provider_request_id = ANY($3::text[]))`,
            [run.provider, refundIds, requestIds],
          )
        : [];
      const earlier = requestIds.length
        ? await tx.query<EarlierRow>(
            `SELECT DISTINCT ON (a.provider_request_id) a.provider_request_id, r.id AS refund_id, r.amount, r.created_at
               FROM refund_attempts a JOIN refunds r ON r.id = a.refund_id
              WHERE r.provider = $1 AND a.provider_request_id = ANY($2::text[])
                AND a.provider_request_id IS DISTINCT FROM r.provider_request_id
              ORDER BY a.provider_request_id`,
            [run.provider, requestIds],
          )
        : [];
      const byRefundId = new Map(ours.filter((o) => o.provider_refund_id).map((o) => [o.provider_refund_id!, o]));
      const byRequestId = new Map(ours.filter((o) => o.provider_request_id).map((o) => [o.provider_request_id!, o]));
      const earlierById = new Map(earlier.map((e) => [e.provider_request_id, e]));

      const pairs: Array<{ key: string; theirs: ProviderRefundRecord; pair: () => void }> = [];
      const lonely: Array<{ theirs: ProviderRefundRecord; detail: string }> = [];
      for (const theirs of todo) {
        const viaId = theirs.providerRefundId ? byRefundId.get(theirs.providerRefundId) : undefined;
        const viaRequest = theirs.providerRequestId ? byRequestId.get(theirs.providerRequestId) : undefined;
        // Our request id on a provider refund other than the one we know: a second refund, not ours.
        const sameRefund =
          viaRequest && (viaRequest.provider_refund_id === null || theirs.providerRefundId === null || viaRequest.provider_refund_id === theirs.providerRefundId);
        const our = viaId ?? (sameRefund ? viaRequest : undefined);
        if (our) {
          if (!inWindow(our.created_at, from, to) && !inWindow(theirs.createdAt, from, to)) continue;
          pairs.push({
            key: `r:${our.id}`,
            theirs,
            pair: () => batch.compare(ourSide(our), theirs, { refundId: our.id, requestId: our.provider_request_id }),
          });
          continue;
        }
        const prior = !viaRequest && theirs.providerRequestId ? earlierById.get(theirs.providerRequestId) : undefined;
        if (prior) {
          if (!inWindow(prior.created_at, from, to) && !inWindow(theirs.createdAt, from, to)) continue;
          pairs.push({
            key: `q:${prior.provider_request_id}`,
            theirs,
            pair: () =>
              batch.compare({ status: 'failed', amount: prior.amount, refundedAmount: '0' }, theirs, {
                refundId: prior.refund_id,
                requestId: prior.provider_request_id,
                detail: 'an earlier submission of this refund (replaced by an ops retry), which we hold as failed',
              }),
          });
          continue;
        }
        if (!inWindow(theirs.createdAt, from, to)) continue;
        lonely.push({ theirs, detail: lonelyDetail(theirs, viaRequest) });
      }
      // One provider record per refund of ours: a second one paired with the same refund is not ours.
      const claimed = await this.claimKeys(tx, run.id, pairs.map((p) => p.key));
      for (const p of pairs) {
        if (claimed.delete(p.key)) p.pair();
        else if (inWindow(p.theirs.createdAt, from, to)) {
          lonely.push({ theirs: p.theirs, detail: `a second provider refund for the same refund of ours (${p.key.slice(2)})` });
        }
      }
      for (const l of lonely) batch.missingLocally(l.theirs, l.detail);
      await this.write(tx, exec, batch);
    });
  }

  /**
   * Phase 2: our refunds of the window not paired yet (all of them for Binance, which has no
   * list) are asked for one by one. Absent at the provider → `missing_at_provider`, unless
   * nothing was ever sent (provider_state not_sent: a refusal, or not submitted yet) or the
   * create is still in flight (not final, outcome unknown), which the worker resolves.
   */
  private async lookUpUnpaired(exec: Execution, source: RecordSource): Promise<void> {
    const { run } = exec;
    let after = { key: '-infinity', id: '00000000-0000-0000-0000-000000000000' };
    for (;;) {
      exec.check();
      const rows = await this.db.query<OurRow>(
        `SELECT r.id, r.status, r.amount, r.refunded_amount, r.created_at, r.created_at::text AS created_key,
                r.provider_request_id, r.provider_refund_id, r.provider_state, r.payment_id, p.provider_data
           FROM refunds r
           LEFT JOIN payments p ON p.provider = r.provider AND p.payment_id = r.payment_id
          WHERE r.provider = $1 AND r.created_at >= $2 AND r.created_at < $3
            AND (r.created_at, r.id) > ($4::timestamptz, $5::uuid)
            AND NOT EXISTS (SELECT 1 FROM reconciliation_seen s WHERE s.run_id = $6 AND s.key = 'r:' || r.id::text)
          ORDER BY r.created_at, r.id
          LIMIT $7`,
        [run.provider, exec.from, exec.to, after.key, after.id, run.id, LOOKUP_BATCH],
      );
      if (rows.length === 0) return;
      const last = rows[rows.length - 1];
      after = { key: last.created_key, id: last.id };
      const asks = rows.filter((r) => r.provider_request_id !== null && r.provider_state !== 'not_sent');
      const answers = await mapPool(asks, this.settings.concurrency, (row) => source.lookup(referenceOf(row)));
      const batch = new Batch();
      asks.forEach((row, i) => this.judge(batch, row, answers[i]));
      await this.db.transaction((tx) => this.write(tx, exec, batch));
    }
  }

  private judge(batch: Batch, row: OurRow, answer: Exclude<ProviderRefundLookup, { kind: 'error' }>): void {
    if (answer.kind === 'found') {
      batch.records++;
      batch.compare(ourSide(row), answer.record, { refundId: row.id, requestId: row.provider_request_id });
    } else if (isFinal(row.status) || row.provider_state === 'acknowledged') {
      batch.missingAtProvider(row);
    }
    // Else: sent moments ago with the outcome unknown; the refund's worker settles that.
  }

  /**
   * Phase 3: the earlier submissions of refunds of the window (request ids replaced by an ops
   * retry) not seen in a list. Each should be failed at the provider or absent; one the
   * provider shows otherwise (e.g. succeeded) is a mismatch: money may have moved twice.
   */
  private async lookUpEarlierSubmissions(exec: Execution, source: RecordSource): Promise<void> {
    const { run } = exec;
    let after = '';
    for (;;) {
      exec.check();
      const rows = await this.db.query<EarlierRow>(
        `SELECT DISTINCT ON (a.provider_request_id) a.provider_request_id, r.id AS refund_id, r.amount, r.created_at,
                r.payment_id, p.provider_data
           FROM refund_attempts a
           JOIN refunds r ON r.id = a.refund_id
           LEFT JOIN payments p ON p.provider = r.provider AND p.payment_id = r.payment_id
          WHERE r.provider = $1 AND r.created_at >= $2 AND r.created_at < $3
            AND a.provider_request_id IS DISTINCT FROM r.provider_request_id
            AND a.provider_request_id <> 'none' AND a.provider_request_id > $4
            AND NOT EXISTS (SELECT 1 FROM reconciliation_seen s WHERE s.run_id = $5 AND s.key = 'q:' || a.provider_request_id)
          ORDER BY a.provider_request_id
          LIMIT $6`,
        [run.provider, exec.from, exec.to, after, run.id, LOOKUP_BATCH],
      );
      if (rows.length === 0) return;
      after = rows[rows.length - 1].provider_request_id;
      const answers = await mapPool(rows, this.settings.concurrency, (row) => source.lookup(referenceOf(row)));
      const batch = new Batch();
      rows.forEach((row, i) => {
        const answer = answers[i];
        // Absent: the provider refused that create outright (nothing to compare).
        if (answer.kind !== 'found') return;
        batch.records++;
        batch.compare({ status: 'failed', amount: row.amount, refundedAmount: '0' }, answer.record, {
          refundId: row.refund_id,
          requestId: row.provider_request_id,
          detail: 'an earlier submission of this refund (replaced by an ops retry), which we hold as failed',
        });
      });
      await this.db.transaction((tx) => this.write(tx, exec, batch));
    }
  }

  /** Inserts `keys` into the run's scratch set; returns those that were not there yet. */
  private async claimKeys(tx: Sql, runId: string, keys: string[]): Promise<Set<string>> {
    if (keys.length === 0) return new Set();
    const rows = await tx.query<{ key: string }>(
      `INSERT INTO reconciliation_seen (run_id, key) SELECT $1, k FROM unnest($2::text[]) AS k ON CONFLICT DO NOTHING RETURNING key`,
      [runId, [...new Set(keys)]],
    );
    return new Set(rows.map((r) => r.key));
  }

  /** Writes a batch's mismatches and counters, only while this execution holds the lease. */
  private async write(tx: Sql, exec: Execution, batch: Batch): Promise<void> {
    const held = await tx.query(
      `UPDATE reconciliation_runs
          SET checked = checked + $3, matched = matched + $4, mismatch_count = mismatch_count + $5,
              provider_records = provider_records + $6, updated_at = now()
        WHERE id = $1 AND lease_owner = $2 AND status = 'running'
        RETURNING id`,
      [exec.run.id, exec.owner, batch.checked, batch.matched, batch.findings.length, batch.records],
    );
    if (held.length === 0) {
      exec.lost = true;
      throw new LostLease('lease lost');
    }
    if (batch.findings.length === 0) return;
    await tx.query(
      `INSERT INTO reconciliation_mismatches (run_id, kind, refund_id, provider_refund_id, provider_request_id, ours, theirs, detail)
       SELECT $1, x.kind, x.refund_id, x.provider_refund_id, x.provider_request_id, x.ours, x.theirs, x.detail
         FROM jsonb_to_recordset($2::jsonb)
           AS x(n integer, kind text, refund_id uuid, provider_refund_id text, provider_request_id text, ours jsonb, theirs jsonb, detail text)
        ORDER BY x.n`,
      [exec.run.id, JSON.stringify(batch.findings.map((f, n) => ({ n, ...f })))],
    );
  }

  /**
   * Takes the run: a queued one, or a running one whose lease expired (its worker died).
   * A restart starts over: the earlier execution's partial results and scratch are dropped.
   */
  private async claim(runId: string, owner: string): Promise<RunRow | undefined> {
    return this.db.transaction(async (tx) => {
      const [run] = await tx.query<RunRow>(
        `UPDATE reconciliation_runs
            SET status = 'running', lease_owner = $2, lease_until = now() + $3 * interval '1 millisecond',
                attempts = attempts + 1, started_at = COALESCE(started_at, now()), updated_at = now(),
                checked = 0, matched = 0, mismatch_count = 0, provider_records = 0, error = NULL
          WHERE id = $1 AND (status = 'queued' OR (status = 'running' AND lease_until < now()))
          RETURNING *`,
        [runId, owner, this.settings.leaseMs],
      );
      if (!run) return undefined;
      await tx.query(`DELETE FROM reconciliation_mismatches WHERE run_id = $1`, [runId]);
      await tx.query(`DELETE FROM reconciliation_seen WHERE run_id = $1`, [runId]);
      return run;
    });
  }

  private async renew(exec: Execution): Promise<void> {
    const rows = await this.db.query(
      `UPDATE reconciliation_runs SET lease_until = now() + $3 * interval '1 millisecond'
        WHERE id = $1 AND lease_owner = $2 AND status = 'running' RETURNING id`,
      [exec.run.id, exec.owner, this.settings.leaseMs],
    );
    if (rows.length === 0) exec.lost = true;
  }

  /** Ends the run (partial results stay with a failed one) and drops its scratch. */
  private async finish(exec: Execution, status: 'completed' | 'failed', error: string | null): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.query(
        `UPDATE reconciliation_runs
            SET status = $3, error = $4, completed_at = now(), updated_at = now(), lease_owner = NULL, lease_until = NULL
          WHERE id = $1 AND lease_owner = $2`,
        [exec.run.id, exec.owner, status, error?.slice(0, 2000) ?? null],
      );
      await tx.query(`DELETE FROM reconciliation_seen WHERE run_id = $1`, [exec.run.id]);
    });
  }

  /** Hands the run back (queued, no lease) for a later execution. */
  private async release(exec: Execution): Promise<void> {
    await this.db.query(
      `UPDATE reconciliation_runs SET status = 'queued', lease_owner = NULL, lease_until = NULL, updated_at = now()
        WHERE id = $1 AND lease_owner = $2 AND status = 'running'`,
      [exec.run.id, exec.owner],
    );
  }
}

function lonelyDetail(theirs: ProviderRefundRecord, sameRequest: OurRow | undefined): string {
  if (sameRequest) {
    return `carries the request id of refund ${sameRequest.id}, which the provider knows as ${sameRequest.provider_refund_id}: a second refund at the provider`;
  }
  if (looksLikeOurRequestId(theirs.providerRequestId)) {
    return 'carries a request id in our format that no refund of ours has: our row may have been lost';
  }
  return 'no refund of ours has its ids: not created by this service';
}
