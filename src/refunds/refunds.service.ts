import { Injectable, Optional } from '@nestjs/common';
import { MetricsService } from '../metrics/metrics.service.js';
import { MerchantsService } from '../merchants/merchants.service.js';
import { createHash, randomUUID } from 'node:crypto';
import { AppConfig } from '../config/config.js';
import { decimalPlaces, formatAmount, money } from '../common/money.js';
import { Batcher, batchLimits, oneItemMayHaveFailed } from '../common/batcher.js';
import { KeyedGate } from '../common/keyed-gate.js';
import { Problem } from '../common/problem.js';
import { Database, Sql } from '../database/database.js';
import { AuthContext, actorOf, merchantScope } from '../auth/auth-context.js';
import { BalanceRow, PaymentsService, balanceOf, balanceSqlFor, checkFits } from '../payments/payments.service.js';
import type { PaymentRow } from '../payments/payment.row.js';
import type { ProviderPayment, RefundProvider } from '../providers/provider.js';
import { ProvidersService } from '../providers/providers.service.js';
import { RefundQueueService } from '../processing/refund-queue.service.js';
import { CreateRefundDto, ListRefundsQuery } from './refund.dto.js';
import { RefundJson, RefundRow, toRefundJson } from './refund.row.js';
import { RefundStateService } from './refund-state.service.js';
import { isRefundStatus, RefundStatus } from './refund-status.js';

export interface CreateResult {
  refund: RefundJson;
  replayed: boolean;
}

/**
 * The steps of a create timed in refund_create_stage_duration_seconds: the HTTP request's way
 * to the handler (admission: key check, rate limit, body validation; its time comes from the
 * controller), the wait for this process's earlier creates on the same payment, the
 * optimistic path's two batched statements, the locked path, and the job's hand-off to
 * Redis (from the commit to the job's arrival, which now runs on after the answer).
 */
const CREATE_STAGES = ['admission', 'gate', 'snapshot', 'insert', 'locked', 'enqueue'] as const;
type CreateStage = (typeof CREATE_STAGES)[number];

type CreateOutcome = { created: RefundRow } | { replayOf: RefundRow } | { conflict: true } | { uncached: true };

/** How many times a create checks against a fresh snapshot before it takes the payment row lock. */
const OPTIMISTIC_ATTEMPTS = 2;

/** At or above the merchant's threshold, an ops approval comes first (contract §6). */
function statusFor(dto: CreateRefundDto, threshold: string | null): 'queued' | 'pending_approval' {
  return threshold !== null && money(dto.amount).gte(threshold) ? 'pending_approval' : 'queued';
}

/**
 * Everything a create checks, in one snapshot, for a batch of creates (see Batcher): an
 * earlier refund with the key, the payment (the columns the checks use; all NULL when it is
 * not cached), its balance and the merchant's approval threshold. Arrays, one element per
 * create: $1 provider, $2 payment id, $3 merchant, $4 idempotency key, $5 currency. One row
 * per element, in order. The LATERAL subqueries (LIMIT 1 keeps the payment's from being
 * flattened into a join) make every lookup an index probe, whatever the batch size.
 */
const CREATE_SNAPSHOT_SQL = `
  SELECT q.ord, s.seen_id, s.approval_threshold, p.provider, p.payment_id, p.merchant_id, p.amount, p.currency,
         p.status, p.provider_data, p.guard_version, b.*
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
           WITH ORDINALITY AS q(provider, payment_id, merchant_id, idempotency_key, currency, ord)
   CROSS JOIN LATERAL (
         SELECT (SELECT r.id FROM refunds r WHERE r.merchant_id = q.merchant_id AND r.idempotency_key = q.idempotency_key) AS seen_id,
                (SELECT m.approval_thresholds->>q.currency FROM merchants m WHERE m.id = q.merchant_id) AS approval_threshold) s
    LEFT JOIN LATERAL (
         SELECT * FROM payments WHERE payments.provider = q.provider AND payments.payment_id = q.payment_id LIMIT 1) p ON true
   CROSS JOIN LATERAL (${balanceSqlFor('q.provider', 'q.payment_id')}) b
   ORDER BY q.ord`;

/** The payment columns a create's checks read. */
type CheckedPayment = Pick<PaymentRow, 'merchant_id' | 'amount' | 'currency' | 'status' | 'provider_data' | 'guard_version'>;

type CreateSnapshot = BalanceRow &
  Omit<PaymentRow, 'provider' | 'created_at' | 'updated_at'> & {
    provider: PaymentRow['provider'] | null;
    seen_id: string | null;
    approval_threshold: string | null;
  };

interface SnapshotRequest {
  provider: string;
  paymentId: string;
  merchantId: string;
  idempotencyKey: string;
  currency: string;
}

/** One refund to insert if its payment's guard version is still `guardVersion` (RefundsService.insertGuarded). */
interface GuardedInsert {
  id: string;
  merchantId: string;
  provider: string;
  paymentId: string;
  amount: string;
  currency: string;
  reason: string;
  description: string | null;
  metadata: string;
  providerOptions: string;
  idempotencyKey: string;
  requestHash: string;
  createdByKeyId: string | null;
  status: 'queued' | 'pending_approval';
  actor: string;
  guardVersion: string;
}

type GuardedOutcome = { created: RefundRow } | { conflict: true } | 'stale';

/**
 * Inserts refunds, each with its creation event and the event's outbox entry, for a batch of
 * creates (arrays, one element per create, in GuardedInsert's field order). Each refund is
 * inserted only if its payment's guard version is still the one its checks saw, and its
 * payment row is locked first (FOR UPDATE). A row that changed since the statement's
 * snapshot is re-read at its latest version and the version re-checked (READ COMMITTED), so a
 * create or retry that committed since the snapshot is always noticed. A row locked by
 * someone else right now (SKIP LOCKED) counts as changed too: that create looks again. So a
 * batch never waits for a payment lock: it cannot hold up its other creates behind one
 * payment's lock holder, nor deadlock with another batch or a locked create.
 * One row per element, in order: guarded false when the version had moved (nothing written
 * for it), and the refund's columns, all NULL when its key was used concurrently (ON CONFLICT).
 * Casts: in INSERT ... SELECT the parameters get no type from the columns.
 */
const INSERT_GUARDED_SQL = `
  WITH q AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::uuid[], $14::text[],
                         $15::text[], $16::bigint[])
      WITH ORDINALITY AS q(id, merchant_id, provider, payment_id, amount, currency, reason, description, metadata,
                           provider_options, idempotency_key, request_hash, created_by_key_id, status, actor,
                           guard_version, ord)),
  g AS (
    SELECT q.id FROM q CROSS JOIN LATERAL (
      SELECT 1 FROM payments p
       WHERE p.provider = q.provider AND p.payment_id = q.payment_id AND p.guard_version = q.guard_version
         FOR UPDATE SKIP LOCKED) locked),
  r AS (
    INSERT INTO refunds (id, merchant_id, provider, payment_id, amount, currency, status, reason, description,
                         metadata, provider_options, idempotency_key, request_hash, created_by_key_id, next_check_at)
    SELECT q.id, q.merchant_id, q.provider, q.payment_id, q.amount, q.currency, q.status, q.reason, q.description,
           q.metadata::jsonb, q.provider_options::jsonb, q.idempotency_key, q.request_hash, q.created_by_key_id,
           CASE WHEN q.status = 'queued' THEN now() END
      FROM q JOIN g ON g.id = q.id
    ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
    RETURNING *),
  e AS (INSERT INTO refund_events (refund_id, from_status, to_status, actor, detail)
        SELECT r.id, NULL::text, r.status, q.actor, '{}'::jsonb FROM r JOIN q ON q.id = r.id RETURNING id),
  o AS (INSERT INTO refund_event_outbox (event_id) SELECT id FROM e)
  SELECT q.ord, (g.id IS NOT NULL) AS guarded, r.*
    FROM q LEFT JOIN g ON g.id = q.id LEFT JOIN r ON r.id = q.id
   ORDER BY q.ord`;

/** Canonical JSON (sorted keys) of the request body: what "same body" means for idempotency. */
export function requestHash(body: unknown): string {
  const canonical = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canonical);
    if (v && typeof v === 'object') {
      return Object.fromEntries(
        Object.keys(v as object)
          .sort()
          .map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
      );
    }
    return v;
  };
  return createHash('sha256').update(JSON.stringify(canonical(body))).digest('hex');
}

interface Cursor {
  createdAt: string;
  id: string;
}

function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify([c.createdAt, c.id])).toString('base64url');
}

function decodeCursor(text: string): Cursor {
  try {
    const [createdAt, id] = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as [unknown, unknown];
    if (typeof createdAt !== 'string' || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/.test(createdAt)) throw new Error();
    if (Number.isNaN(Date.parse(createdAt))) throw new Error();
    if (typeof id !== 'string' || !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id)) throw new Error();
    return { createdAt, id };
  } catch {
    throw Problem.validation([{ field: 'cursor', message: 'cursor is not one this API returned' }]);
  }
}

@Injectable()
export class RefundsService {
  constructor(
    private readonly db: Database,
    private readonly cfg: AppConfig,
    private readonly providers: ProvidersService,
    private readonly payments: PaymentsService,
    private readonly state: RefundStateService,
    private readonly queue: RefundQueueService,
    private readonly merchants: MerchantsService,
    @Optional() private readonly metrics?: MetricsService,
  ) {
    this.snapshots = new Batcher((reqs) => this.readSnapshots(reqs), {
      ...batchLimits(this.cfg.createBatchSize),
      splitOn: oneItemMayHaveFailed,
      onBatch: (n) => this.metrics?.refundCreateBatchSize.observe({ statement: 'snapshot' }, n),
      onSplit: () => this.metrics?.refundCreateBatchSplits.inc({ statement: 'snapshot' }),
    });
    this.inserts = new Batcher((batch) => this.insertGuarded(this.db, batch), {
      ...batchLimits(this.cfg.createBatchSize),
      keyOf: (g) => `${g.provider}\u0000${g.paymentId}`,
      splitOn: oneItemMayHaveFailed,
      onBatch: (n) => this.metrics?.refundCreateBatchSize.observe({ statement: 'insert' }, n),
      onSplit: () => this.metrics?.refundCreateBatchSplits.inc({ statement: 'insert' }),
    });
    // The histogram's children, looked up once per stage rather than by labels on every create.
    const stages = this.metrics?.refundCreateStage;
    if (stages) {
      const timers = {} as Record<CreateStage, { observe: (seconds: number) => void }>;
      for (const stage of CREATE_STAGES) timers[stage] = stages.labels({ stage });
      this.stageTimers = timers;
    }
  }

  private readonly stageTimers?: Record<CreateStage, { observe: (seconds: number) => void }>;

  /** Per-payment queue of this process's creates (see KeyedGate for why and its bounds). */
  private readonly paymentGate = new KeyedGate(256, 5_000);

  /**
   * Creates arriving while earlier ones are at the database go there together (Batcher): one
   * snapshot statement and one insert statement per batch instead of per create. At most one
   * create per payment in an insert batch (they would share a snapshot); the gate above
   * already keeps this process to one at a time per payment.
   */
  private readonly snapshots: Batcher<SnapshotRequest, CreateSnapshot>;
  private readonly inserts: Batcher<GuardedInsert, GuardedOutcome>;


  /**
   * POST /v1/refunds. The refund row (status queued, due now) is committed before the
   * response, which makes the hand-off durable: the job's add to Redis runs on after the
   * answer, and one that fails is the recovery sweeper's.
   * `admissionMs`: how long the HTTP request took to reach the handler, when known (the
   * create's first stage in refund_create_stage_duration_seconds).
   */
  async create(auth: AuthContext, idempotencyKey: string, dto: CreateRefundDto, rawBody: unknown, admissionMs?: number): Promise<CreateResult> {
    if (admissionMs !== undefined && admissionMs > 0) this.stageTimers?.admission.observe(admissionMs / 1000);
    const merchantId = auth.merchantId!;
    const hash = requestHash(rawBody);

    let provider: RefundProvider;
    try {
      provider = this.providers.get(dto.provider);
      this.validateForProvider(dto, provider);
    } catch (err) {
      // A replay is answered from the row alone, before the body's own checks: a key reused
      // with another (even invalid) body is key reuse, whatever that body's problems.
      const seen = await this.findByIdempotencyKey(this.db, merchantId, idempotencyKey);
      if (seen) return this.replay(seen, hash);
      throw err;
    }
    if (provider.normalizePaymentId) dto.paymentId = provider.normalizePaymentId(dto.paymentId);

    // One create per payment at a time in this process (see KeyedGate): a burst on one payment
    // waits here in memory instead of on pooled connections (and, in the locked path, on the
    // payment row lock), and the optimistic path below does not collide with itself.
    const queued = performance.now();
    let admitted = false;
    let result: CreateOutcome;
    try {
      result = await this.paymentGate.run(`${dto.provider}\u0000${dto.paymentId}`, () => {
        admitted = true;
        this.observeStage('gate', queued);
        return this.createInGate(auth, merchantId, idempotencyKey, hash, dto, provider);
      });
    } catch (err) {
      // Refused by the gate (its queue full, or the wait too long): the longest waits of a burst on one payment.
      if (!admitted) this.observeStage('gate', queued);
      throw err;
    }

    if ('replayOf' in result) return this.replay(result.replayOf!, hash);
    if ('conflict' in result || 'uncached' in result) {
      const winner = await this.findByIdempotencyKey(this.db, merchantId, idempotencyKey);
      if (!winner) throw new Problem('service_unavailable', 'Please retry the request.');
      return this.replay(winner, hash);
    }
    const row = result.created!;
    this.metrics?.refundsCreated.inc({ provider: row.provider, status: row.status });
    if (row.status === 'queued') {
      // Answered without waiting for Redis (handOff says why that is safe); the stage is
      // observed when the job is in Redis.
      const handedOff = performance.now();
      await this.queue.handOff(row.provider, row.id, () => this.observeStage('enqueue', handedOff));
    }
    return { refund: toRefundJson(row), replayed: false };
  }

  /**
   * The optimistic path, two statements and no transaction: one snapshot read of everything
   * the checks need (an earlier refund with this key, the payment, its balance, the
   * merchant's approval threshold), the checks, then one statement that inserts the refund
   * (with its event and outbox row) only if the payment's guard version is still the one the
   * snapshot saw. Every new refund and every refund put back in line (ops retry) moves that
   * version in its own transaction (a trigger on refunds), so an unchanged version means nothing that
   * could change the checks' answer committed in between, and a concurrent one either
   * committed first (the version moved: look again) or waits for our row lock and then sees
   * our refund. After OPTIMISTIC_ATTEMPTS lost races (only other processes can cause them:
   * this process's creates on the payment queue in the gate) it takes the locked path.
   */
  private async createInGate(
    auth: AuthContext,
    merchantId: string,
    idempotencyKey: string,
    hash: string,
    dto: CreateRefundDto,
    provider: RefundProvider,
  ): Promise<CreateOutcome> {
    for (let attempt = 0; attempt < OPTIMISTIC_ATTEMPTS; attempt++) {
      const asked = performance.now();
      const snap = await this.snapshots.submit({
        provider: dto.provider,
        paymentId: dto.paymentId,
        merchantId,
        idempotencyKey,
        currency: dto.currency,
      });
      this.observeStage('snapshot', asked);
      if (snap.seen_id) {
        const existing = await this.findByIdempotencyKey(this.db, merchantId, idempotencyKey);
        if (existing) return { replayOf: existing };
      }
      // Not cached yet: the locked path looks the payment up at the provider first.
      if (snap.provider === null) break;
      const payment: CheckedPayment = snap;
      let status: 'queued' | 'pending_approval';
      try {
        this.checkPayment(merchantId, dto, provider, payment);
        checkFits(provider, payment, balanceOf(payment, snap), dto.amount);
        status = statusFor(dto, snap.approval_threshold);
      } catch (err) {
        // A concurrent request with the same key may have committed since the snapshot: it
        // is that request's answer, not a refusal.
        if (err instanceof Problem) {
          const raced = await this.findByIdempotencyKey(this.db, merchantId, idempotencyKey);
          if (raced) return { replayOf: raced };
        }
        throw err;
      }
      const sent = performance.now();
      const inserted = await this.inserts.submit(this.guardedInsert(auth, idempotencyKey, hash, dto, status, payment.guard_version));
      this.observeStage('insert', sent);
      if (inserted !== 'stale') return inserted;
      this.metrics?.refundCreateRetries.inc({ provider: dto.provider });
    }
    const locked = performance.now();
    try {
      return await this.lockedCreate(auth, merchantId, idempotencyKey, hash, dto, provider);
    } finally {
      this.observeStage('locked', locked);
    }
  }

  /**
   * How long a create spent in one step, waiting included, since `since`
   * (refund_create_stage_duration_seconds): where a slow create's time went, and whether
   * creates queue on Postgres, on Redis or on one payment (docs/performance.md, finding 63).
   * `gate` and `locked` count failures too (a gate's refusal, a payment the provider does not
   * know); `snapshot` and `insert` count the statements that answered, `enqueue` the adds
   * that reached Redis.
   */
  private observeStage(stage: CreateStage, since: number): void {
    this.stageTimers?.[stage].observe((performance.now() - since) / 1000);
  }

  /**
   * The locked path: the first create of a payment not cached yet (looked up at the provider
   * outside any transaction, then inserted and locked), and creates that lost the optimistic
   * race OPTIMISTIC_ATTEMPTS times.
   */
  private async lockedCreate(
    auth: AuthContext,
    merchantId: string,
    idempotencyKey: string,
    hash: string,
    dto: CreateRefundDto,
    provider: RefundProvider,
  ): Promise<CreateOutcome> {
    const result = await this.insertRefund(auth, idempotencyKey, hash, dto, provider, undefined);
    if (!('uncached' in result)) return result;
    const fetched = await this.payments.fetchFromProvider(dto.provider, dto.paymentId);
    // Where the provider names the payment's merchant (Cobo), it must be this merchant's account.
    if (fetched.providerMerchantId !== undefined) {
      const account = await this.payments.providerAccount(merchantId, dto.provider);
      if (fetched.providerMerchantId !== account) throw this.paymentNotFound(dto);
    }
    return this.insertRefund(auth, idempotencyKey, hash, dto, provider, fetched);
  }

  /**
   * The create transaction: lock the payment row (every locked create and retry on the
   * payment is serialised by it, and optimistic creates by the guard version it carries),
   * check, insert the refund and its event. With `fetched` undefined and no cached payment,
   * it answers `uncached` and writes nothing.
   */
  private insertRefund(
    auth: AuthContext,
    idempotencyKey: string,
    hash: string,
    dto: CreateRefundDto,
    provider: RefundProvider,
    fetched: ProviderPayment | undefined,
  ): Promise<CreateOutcome> {
    const merchantId = auth.merchantId!;
    return this.db.transaction(async (tx) => {
      if (fetched) {
        if (!fetched.refundable) {
          throw new Problem('payment_not_refundable', `The payment is ${fetched.providerStatus} at ${dto.provider}.`);
        }
        await this.payments.insertIfAbsent(tx, dto.provider, merchantId, fetched);
      }
      // The lock comes first, in a statement of its own: under READ COMMITTED each later
      // statement takes a new snapshot, so the sums below see every create that held the lock
      // before us (one statement that locked and summed would sum from its own older snapshot).
      // The merchant's approval threshold comes with it (one statement fewer per create).
      const [locked] = await tx.query<PaymentRow & { approval_threshold: string | null }>(
        `SELECT p.*, (SELECT m.approval_thresholds->>$3 FROM merchants m WHERE m.id = $4) AS approval_threshold
           FROM payments p WHERE p.provider = $1 AND p.payment_id = $2 FOR UPDATE OF p`,
        [dto.provider, dto.paymentId, dto.currency, merchantId],
      );
      if (!locked && !fetched) return { uncached: true as const };
      const { approval_threshold: threshold = null, ...paymentRow } = locked ?? {};
      const payment = locked ? (paymentRow as PaymentRow) : undefined;
      try {
        if (!payment) throw this.paymentNotFound(dto);
        this.checkPayment(merchantId, dto, provider, payment);
        await this.payments.assertFits(tx, provider, payment, dto.amount);
      } catch (err) {
        // A concurrent request with the same key may have committed while we waited for the
        // lock (its amount then counts in the guard above): it is that request's answer, not
        // a refusal. Looked up only when a check fails; otherwise the insert's ON CONFLICT
        // below detects it, one statement fewer on every create.
        if (err instanceof Problem) {
          const raced = await this.findByIdempotencyKey(tx, merchantId, idempotencyKey);
          if (raced) return { replayOf: raced };
        }
        throw err;
      }
      // Under the lock the guard version cannot have moved since the lock statement read it.
      const [inserted] = await this.insertGuarded(tx, [
        this.guardedInsert(auth, idempotencyKey, hash, dto, statusFor(dto, threshold), payment.guard_version),
      ]);
      if (inserted === 'stale') throw new Error('guard version moved under the payment row lock');
      return inserted;
    });
  }

  /** What insertGuarded writes for one create. */
  private guardedInsert(
    auth: AuthContext,
    idempotencyKey: string,
    hash: string,
    dto: CreateRefundDto,
    status: 'queued' | 'pending_approval',
    guardVersion: string,
  ): GuardedInsert {
    return {
      id: randomUUID(),
      merchantId: auth.merchantId!,
      provider: dto.provider,
      paymentId: dto.paymentId,
      amount: dto.amount,
      currency: dto.currency,
      reason: dto.reason ?? 'requested_by_customer',
      description: dto.description ?? null,
      metadata: JSON.stringify(dto.metadata ?? {}),
      providerOptions: JSON.stringify(this.providerOptions(dto)),
      idempotencyKey,
      requestHash: hash,
      createdByKeyId: auth.keyId === 'bootstrap-admin' ? null : auth.keyId,
      status,
      actor: actorOf(auth),
      guardVersion,
    };
  }

  /** Snapshots for a batch of creates (CREATE_SNAPSHOT_SQL), one per request, in order. */
  private async readSnapshots(reqs: SnapshotRequest[]): Promise<CreateSnapshot[]> {
    const rows = await this.db.query<CreateSnapshot & { ord: string }>(CREATE_SNAPSHOT_SQL, [
      reqs.map((r) => r.provider),
      reqs.map((r) => r.paymentId),
      reqs.map((r) => r.merchantId),
      reqs.map((r) => r.idempotencyKey),
      reqs.map((r) => r.currency),
    ]);
    return rows.map(({ ord: _ord, ...snap }) => snap as CreateSnapshot);
  }

  /**
   * Inserts refunds with their creation events and outbox entries (the rows
   * RefundStateService.created() writes: keep the two in step), each only if its payment's
   * guard version is still the one its checks saw: INSERT_GUARDED_SQL. One outcome per
   * insert, in order: 'stale' when the version had moved (nothing written), `conflict` when
   * the key was used concurrently (that request won). The insert itself moves the version
   * (a trigger on refunds, migration 1763930000000).
   */
  private async insertGuarded(sql: Sql, inserts: GuardedInsert[]): Promise<GuardedOutcome[]> {
    const col = <K extends keyof GuardedInsert>(k: K) => inserts.map((g) => g[k]);
    const rows = await sql.query<RefundRow & { guarded: boolean; ord: string }>(INSERT_GUARDED_SQL, [
      col('id'),
      col('merchantId'),
      col('provider'),
      col('paymentId'),
      col('amount'),
      col('currency'),
      col('reason'),
      col('description'),
      col('metadata'),
      col('providerOptions'),
      col('idempotencyKey'),
      col('requestHash'),
      col('createdByKeyId'),
      col('status'),
      col('actor'),
      col('guardVersion'),
    ]);
    if (rows.length !== inserts.length) throw new Error(`guarded insert of ${inserts.length} answered ${rows.length} rows`);
    return rows.map(({ guarded, ord: _ord, ...created }) =>
      !guarded ? 'stale' : created.id === null ? { conflict: true as const } : { created: created as RefundRow },
    );
  }

  /** The checks that depend on the payment alone (not on its other refunds). */
  private checkPayment(merchantId: string, dto: CreateRefundDto, provider: RefundProvider, payment: CheckedPayment): void {
    if (payment.merchant_id !== merchantId) throw this.paymentNotFound(dto);
    if (payment.provider_data.refundable === false) {
      throw new Problem('payment_not_refundable', `The payment is ${payment.status} at ${dto.provider}.`);
    }
    const mismatch = provider.checkPayment?.(
      { paymentId: dto.paymentId, amount: dto.amount, currency: dto.currency, options: this.providerOptions(dto) },
      payment.provider_data,
    );
    if (mismatch) throw new Problem('currency_mismatch', mismatch, { paymentCurrency: payment.currency });
    if (payment.currency !== dto.currency) {
      throw new Problem('currency_mismatch', `The payment is in ${payment.currency}, not ${dto.currency}.`, {
        paymentCurrency: payment.currency,
      });
    }
  }

  private replay(row: RefundRow, hash: string): CreateResult {
    if (row.request_hash !== hash) {
      throw new Problem('idempotency_key_reused', 'This Idempotency-Key was used with a different request body.', {
        refundId: row.id,
      });
    }
    return { refund: toRefundJson(row), replayed: true };
  }

  private async findByIdempotencyKey(sql: Sql, merchantId: string, key: string): Promise<RefundRow | undefined> {
    const [row] = await sql.query<RefundRow>(`SELECT * FROM refunds WHERE merchant_id = $1 AND idempotency_key = $2`, [
      merchantId,
      key,
    ]);
    return row;
  }

  private paymentNotFound(dto: CreateRefundDto): Problem {
    // Another merchant's payment looks exactly like a payment that does not exist.
    return new Problem('payment_not_found', `No ${dto.provider} payment ${dto.paymentId}.`);
  }

  /** Rules that depend on the provider: precision, only the chosen provider's block, its own checks. */
  private validateForProvider(dto: CreateRefundDto, provider: RefundProvider): void {
    const errors: { field: string; message: string }[] = [];
    const decimals = provider.amountDecimals;
    if (money(dto.amount).lte(0)) errors.push({ field: 'amount', message: 'amount must be greater than 0' });
    if (decimalPlaces(dto.amount) > decimals) {
      errors.push({ field: 'amount', message: `${dto.provider} accepts at most ${decimals} decimal places` });
    }
    if (dto.cobo !== undefined && dto.provider !== 'cobo') errors.push({ field: 'cobo', message: 'only allowed with provider cobo' });
    if (dto.lean !== undefined && dto.provider !== 'lean') errors.push({ field: 'lean', message: 'only allowed with provider lean' });
    if (dto.provider === 'cobo' && !dto.cobo) errors.push({ field: 'cobo.tokenId', message: 'cobo.tokenId is required' });
    if (errors.length === 0 && provider.validateCreate) {
      errors.push(...provider.validateCreate({ paymentId: dto.paymentId, amount: dto.amount, currency: dto.currency, options: this.providerOptions(dto) }));
    }
    if (errors.length) throw Problem.validation(errors);
  }

  private providerOptions(dto: CreateRefundDto): Record<string, unknown> {
    if (dto.provider === 'cobo' && dto.cobo) return { ...dto.cobo, refundType: dto.cobo.refundType ?? 'merchant' };
    if (dto.provider === 'lean' && dto.lean) return { ...dto.lean };
    return {};
  }

  async get(auth: AuthContext, id: string): Promise<RefundRow> {
    const scope = merchantScope(auth);
    const row = await this.db.one<RefundRow>(`SELECT * FROM refunds WHERE id = $1 AND ($2::text IS NULL OR merchant_id = $2)`, [
      id,
      scope,
    ]);
    if (!row) throw new Problem('not_found', 'No such refund.');
    return row;
  }

  async list(auth: AuthContext, q: ListRefundsQuery): Promise<{ data: RefundJson[]; nextCursor: string | null }> {
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (clause: (n: string) => string, value: unknown) => {
      params.push(value);
      where.push(clause(`$${params.length}`));
    };
    const scope = merchantScope(auth);
    if (scope !== null) add((p) => `merchant_id = ${p}`, scope);
    else if (q.merchantId) add((p) => `merchant_id = ${p}`, q.merchantId);
    if (q.provider) add((p) => `provider = ${p}`, q.provider);
    if (q.paymentId) add((p) => `payment_id = ${p}`, q.paymentId);
    if (q.status) {
      const statuses = q.status.split(',').map((s) => s.trim());
      const bad = statuses.filter((s) => !isRefundStatus(s));
      if (bad.length) throw Problem.validation([{ field: 'status', message: `unknown status ${bad.join(', ')}` }]);
      add((p) => `status = ANY(${p}::text[])`, statuses as RefundStatus[]);
    }
    if (q.createdFrom) add((p) => `created_at >= ${p}::timestamptz`, q.createdFrom);
    if (q.createdTo) add((p) => `created_at < ${p}::timestamptz`, q.createdTo);
    if (q.stuck === 'true') {
      // Non-final and unchanged for longer than the provider's horizon: the outcome is taking too long.
      const h = this.cfg.processing.stuckAfterMsByProvider;
      params.push(h.binance_pay, h.cobo, h.lean);
      const n = params.length;
      where.push(
        `status IN ('queued', 'processing') AND status_changed_at < now() - make_interval(secs => (CASE provider
           WHEN 'binance_pay' THEN $${n - 2}::double precision WHEN 'cobo' THEN $${n - 1}::double precision
           ELSE $${n}::double precision END) / 1000)`,
      );
    }
    if (q.failureCode) add((p) => `failure_code = ${p}`, q.failureCode);
    if (q.failureCategory) add((p) => `failure_category = ${p}`, q.failureCategory);
    if (q.review === 'true') where.push(`review_flagged_at IS NOT NULL`);
    if (q.cursor) {
      const c = decodeCursor(q.cursor);
      params.push(c.createdAt, c.id);
      where.push(`(created_at, id) < ($${params.length - 1}::timestamptz, $${params.length}::uuid)`);
    }
    const limit = q.limit ?? 20;
    params.push(limit + 1);
    const rows = await this.db.query<RefundRow & { cursor_ts: string }>(
      `SELECT *, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS cursor_ts FROM refunds
        ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
        ORDER BY created_at DESC, id DESC
        LIMIT $${params.length}`,
      params,
    );
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return {
      data: page.map(toRefundJson),
      nextCursor: rows.length > limit && last ? encodeCursor({ createdAt: last.cursor_ts, id: last.id }) : null,
    };
  }

  async attempts(auth: AuthContext, id: string) {
    await this.get(auth, id);
    const rows = await this.db.query<{
      number: number;
      provider_request_id: string;
      operation: string;
      outcome: string;
      http_status: number | null;
      provider_code: string | null;
      error_message: string | null;
      latency_ms: number | null;
      created_at: Date;
    }>(`SELECT * FROM refund_attempts WHERE refund_id = $1 ORDER BY number`, [id]);
    return {
      data: rows.map((r) => ({
        number: r.number,
        providerRequestId: r.provider_request_id,
        operation: r.operation,
        outcome: r.outcome,
        httpStatus: r.http_status,
        providerCode: r.provider_code,
        errorMessage: r.error_message,
        latencyMs: r.latency_ms,
        createdAt: r.created_at.toISOString(),
      })),
    };
  }

  async events(auth: AuthContext, id: string) {
    await this.get(auth, id);
    const rows = await this.db.query<{
      from_status: string | null;
      to_status: string;
      actor: string;
      detail: Record<string, unknown>;
      created_at: Date;
    }>(`SELECT * FROM refund_events WHERE refund_id = $1 ORDER BY id`, [id]);
    // Merchants see what happened, not which ops key did it or what ops wrote about it.
    const merchant = auth.role === 'merchant';
    const ownKeys = merchant
      ? new Set(
          (await this.db.query<{ id: string }>(`SELECT id FROM api_keys WHERE merchant_id = $1`, [auth.merchantId])).map(
            (k) => `api_key:${k.id}`,
          ),
        )
      : new Set<string>();
    return {
      data: rows.map((r) => ({
        from: r.from_status,
        to: r.to_status,
        actor: merchant && r.actor.startsWith('api_key:') && !ownKeys.has(r.actor) ? 'ops' : r.actor,
        detail: merchant ? (typeof r.detail.action === 'string' ? { action: r.detail.action } : {}) : r.detail,
        createdAt: r.created_at.toISOString(),
      })),
    };
  }

}
