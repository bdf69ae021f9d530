import { Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { actorOf, type AuthContext } from '../auth/auth-context.js';
import { type FieldError, Problem } from '../common/problem.js';
import { Database } from '../database/database.js';
import type { ProviderName } from '../providers/provider.js';
import { ProvidersService } from '../providers/providers.service.js';
import type { MismatchKind, OurView, TheirView } from './compare.js';
import type { CreateReconciliationDto, ListReconciliationsQuery, RunStatus } from './reconciliation.dto.js';
import { ReconciliationQueueService } from './reconciliation-queue.service.js';
import { MAX_WINDOW_MS } from './reconciliation-settings.js';

/** A row of reconciliation_runs. */
export interface RunRow {
  id: string;
  provider: ProviderName;
  from_at: Date;
  to_at: Date;
  status: RunStatus;
  scheduled: boolean;
  requested_by: string;
  checked: number;
  matched: number;
  mismatch_count: number;
  provider_records: number;
  attempts: number;
  lease_owner: string | null;
  lease_until: Date | null;
  error: string | null;
  created_at: Date;
  updated_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
}

interface MismatchRow {
  id: string;
  kind: MismatchKind;
  refund_id: string | null;
  provider_refund_id: string | null;
  provider_request_id: string | null;
  ours: OurView | null;
  theirs: TheirView | null;
  detail: string | null;
}

/** Most mismatches returned with one run; `mismatchCount` always has the total. */
const MISMATCHES_SHOWN = 10_000;

/** ISO 8601 with an explicit offset (Z or ±hh:mm), or a bare date (taken as UTC midnight). */
const INSTANT_RE = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2}))?$/;

function instant(value: string, field: string, errors: FieldError[]): Date | undefined {
  const date = INSTANT_RE.test(value) ? new Date(value.length === 10 ? `${value}T00:00:00Z` : value) : undefined;
  if (!date || Number.isNaN(date.getTime())) {
    errors.push({ field, message: `${field} must be an ISO 8601 date-time with an offset (e.g. 2026-11-22T00:00:00Z) or a date` });
    return undefined;
  }
  return date;
}

/** The window of a run from the request, or 400 validation_failed naming the fields. */
export function parseWindow(from: string, to: string, now = new Date()): { from: Date; to: Date } {
  const errors: FieldError[] = [];
  const f = instant(from, 'from', errors);
  const t = instant(to, 'to', errors);
  if (f && t) {
    if (t.getTime() <= f.getTime()) errors.push({ field: 'to', message: 'to must be after from' });
    else if (t.getTime() - f.getTime() > MAX_WINDOW_MS) errors.push({ field: 'to', message: 'the window may span at most 31 days' });
    if (f.getTime() > now.getTime()) errors.push({ field: 'from', message: 'from must not be in the future' });
  }
  if (errors.length) throw Problem.validation(errors);
  return { from: f!, to: t! };
}

export function runSummary(r: RunRow) {
  return {
    id: r.id,
    provider: r.provider,
    from: r.from_at.toISOString(),
    to: r.to_at.toISOString(),
    status: r.status,
    scheduled: r.scheduled,
    checked: r.checked,
    matched: r.matched,
    mismatchCount: r.mismatch_count,
    providerRecords: r.provider_records,
    attempts: r.attempts,
    requestedBy: r.requested_by,
    createdAt: r.created_at.toISOString(),
    startedAt: r.started_at ? r.started_at.toISOString() : null,
    completedAt: r.completed_at ? r.completed_at.toISOString() : null,
    error: r.error,
  };
}

/** The API side of reconciliation runs: create (enqueue), read, list. */
@Injectable()
export class ReconciliationService {
  constructor(
    private readonly db: Database,
    private readonly providers: ProvidersService,
    private readonly queue: ReconciliationQueueService,
  ) {}

  async create(auth: AuthContext, dto: CreateReconciliationDto): Promise<{ id: string; status: RunStatus }> {
    const window = parseWindow(dto.from, dto.to);
    // 422 provider_not_configured when the provider has no credentials.
    this.providers.get(dto.provider);
    const id = randomUUID();
    await this.db.query(
      `INSERT INTO reconciliation_runs (id, provider, from_at, to_at, status, requested_by) VALUES ($1, $2, $3, $4, 'queued', $5)`,
      [id, dto.provider, window.from, window.to, actorOf(auth)],
    );
    // The row is the record: if Redis cannot take the job now, the sweeper enqueues it later.
    await this.queue.wake(id);
    return { id, status: 'queued' };
  }

  async get(id: string) {
    const run = await this.db.one<RunRow>(`SELECT * FROM reconciliation_runs WHERE id = $1`, [id]);
    if (!run) throw new Problem('not_found', 'No such reconciliation run.');
    const rows = await this.db.query<MismatchRow>(
      `SELECT id, kind, refund_id, provider_refund_id, provider_request_id, ours, theirs, detail
         FROM reconciliation_mismatches WHERE run_id = $1 ORDER BY id LIMIT $2`,
      [id, MISMATCHES_SHOWN],
    );
    return {
      ...runSummary(run),
      mismatches: rows.map((m) => ({
        refundId: m.refund_id,
        providerRefundId: m.provider_refund_id,
        providerRequestId: m.provider_request_id,
        kind: m.kind,
        ours: m.ours,
        theirs: m.theirs,
        detail: m.detail,
      })),
      mismatchesTruncated: run.mismatch_count > rows.length,
    };
  }

  async list(q: ListReconciliationsQuery) {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.provider) {
      params.push(q.provider);
      where.push(`provider = $${params.length}`);
    }
    if (q.status) {
      params.push(q.status);
      where.push(`status = $${params.length}`);
    }
    params.push(q.limit ?? 20);
    const rows = await this.db.query<RunRow>(
      `SELECT * FROM reconciliation_runs ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
        ORDER BY created_at DESC, id DESC LIMIT $${params.length}`,
      params,
    );
    return { data: rows.map(runSummary) };
  }
}
