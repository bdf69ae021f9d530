import { Injectable, Logger } from '@nestjs/common';
import { stringify, type Options as CsvOptions } from 'csv-stringify/sync';
import type { FastifyReply } from 'fastify';
import { takeOverResponse } from '../common/http-reply.js';
import { pipeline, Readable } from 'node:stream';
import type pg from 'pg';
import Cursor from 'pg-cursor';
import { AppConfig } from '../config/config.js';
import { Problem } from '../common/problem.js';
import { Database } from '../database/database.js';
import { escapeCell } from './csv-cell.js';
import { buildFilter } from './report-filter.js';
import type { ExportQuery } from './reports.dto.js';

const ISO_MS = `'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'`;

/**
 * The export's columns, in order: header name and the SQL that yields the cell as text.
 * Everything is formatted by Postgres (numeric via trim_scale: the canonical form of
 * formatAmount, "12.50" -> "12.5"; timestamps in UTC with milliseconds), so Node only moves
 * strings: no JSON parsing, no Date, no Decimal per row.
 */
export const CSV_COLUMNS: ReadonlyArray<readonly [header: string, sql: string]> = [
  ['id', 'refund_id::text'],
  ['merchant_id', 'merchant_id'],
  ['provider', 'provider'],
  ['payment_id', 'payment_id'],
  ['provider_refund_id', 'provider_refund_id'],
  ['provider_request_id', 'provider_request_id'],
  ['amount', 'trim_scale(amount)::text'],
  ['refunded_amount', 'trim_scale(refunded_amount)::text'],
  ['currency', 'currency'],
  ['status', 'status'],
  ['failure_code', 'failure_code'],
  ['failure_category', 'failure_category'],
  ['reason', 'reason'],
  ['merchant_fee_amount', 'trim_scale(merchant_fee_amount)::text'],
  ['merchant_fee_token', 'merchant_fee_token'],
  ['provider_commission', 'trim_scale(provider_commission)::text'],
  ['created_at', `to_char(created_at AT TIME ZONE 'UTC', ${ISO_MS})`],
  ['completed_at', `to_char(completed_at AT TIME ZONE 'UTC', ${ISO_MS})`],
];

/**
 * Rows per cursor fetch (one round trip each). Measured with bench/reports.ts on 1M rows:
 * fetches of 1,000 rows or more made the service's RSS climb by 140-175 MB during an
 * export (short-lived row data outlives young-generation collections and waits for a full
 * GC), 250-750 rows keep it within ~5 MB at the same throughput.
 */
export const CURSOR_BATCH_ROWS = 500;
/** Rows per CSV chunk (one csv-stringify call and one socket write each, ~40 kB). */
export const CSV_CHUNK_ROWS = 250;

const CSV_OPTIONS: CsvOptions = { record_delimiter: 'windows', cast: { string: escapeCell } };
const HEADER_LINE = stringify([CSV_COLUMNS.map(([header]) => header)], CSV_OPTIONS);

/**
 * `GET /v1/reports/refunds.csv`: one CSV row per refund, ordered by (created_at, id),
 * read through a server-side cursor (pg-cursor) on a connection of its own taken from the
 * service's pool, CURSOR_BATCH_ROWS rows at a time, written as CSV (csv-stringify) in
 * chunks of CSV_CHUNK_ROWS rows. The next batch is fetched while the current one is
 * formatted, and a chunk is made only when the socket has taken the previous one (stream
 * backpressure), so memory holds about two batches whatever the row count.
 *
 * Errors before the first byte (bad filter, database down, a failing query: the first
 * batch is read before the status line) are ordinary problem+json answers; after it, the
 * status line is gone, so the socket is destroyed and the client sees a truncated transfer,
 * never a silently short file. A client that goes away ends the connection at once, which
 * stops the query; the pool opens a fresh one when it needs it.
 */
@Injectable()
export class CsvExportService {
  private readonly logger = new Logger('CsvExport');
  private active = 0;
  /** Exports at once per process: each holds a pool connection for its whole duration. */
  readonly maxConcurrent: number;

  constructor(
    private readonly db: Database,
    cfg: AppConfig,
  ) {
    this.maxConcurrent = Math.max(1, Math.min(4, Math.floor(cfg.dbPoolSize / 4)));
  }

  async export(q: ExportQuery, reply: FastifyReply): Promise<void> {
    const res = reply.raw;
    const filter = buildFilter(q);
    if (this.active >= this.maxConcurrent) {
      throw new Problem('rate_limited', `At most ${this.maxConcurrent} exports run at once; try again shortly.`, {
        retryAfterSeconds: 5,
      });
    }
    this.active++;
    const started = Date.now();
    let client: pg.PoolClient | undefined;
    let released = false;
    // With a query active, connection errors reach the cursor's read; this only keeps an
    // error between reads from crashing the process.
    const onClientError = (err: Error) => this.logger.warn(`export connection error: ${err.message}`);
    /**
     * Gives the connection back once: to the pool when the cursor is exhausted; destroyed
     * (ended, so the server stops the query) after any failure or abort.
     */
    const release = (err?: Error) => {
      if (released) return;
      released = true;
      this.active--;
      if (client) {
        client.release(err ?? undefined);
        client.off('error', onClientError);
      }
    };

    try {
      client = await this.db.pool.connect();
    } catch (err) {
      release();
      throw err;
    }
    client.on('error', onClientError);
    const sql = `SELECT ${CSV_COLUMNS.map(([, expr]) => expr).join(', ')}
                   FROM finance_refunds ${filter.where}
                  ORDER BY created_at, refund_id`;
    const cursor = client.query(new Cursor<string[]>(sql, filter.params, { rowMode: 'array' }));

    // The first batch before the status line: a failing query is still a problem+json.
    let closedEarly = false;
    const abortEarly = () => {
      closedEarly = true;
      release(new Error('client closed the connection'));
    };
    res.once('close', abortEarly);
    let first: string[][];
    try {
      first = await cursor.read(CURSOR_BATCH_ROWS);
    } catch (err) {
      release(err as Error);
      if (closedEarly || res.destroyed) return;
      throw err;
    } finally {
      res.off('close', abortEarly);
    }
    if (closedEarly || res.destroyed) {
      release(new Error('client closed the connection'));
      return;
    }
    if (first.length < CURSOR_BATCH_ROWS) release();

    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
    // From here the file is streamed to the socket by hand (backpressure, aborts); what was
    // set on the reply before (X-Request-Id, RateLimit-*) goes out with it.
    takeOverResponse(reply);
    res.statusCode = 200;
    res.setHeader('Content-Type', 'text/csv; charset=utf-8');
    res.setHeader('Content-Disposition', `attachment; filename="refunds-${stamp}.csv"`);
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Content-Type-Options', 'nosniff');

    let rows = 0;
    async function* chunks(): AsyncGenerator<string> {
      yield HEADER_LINE;
      let batch = first;
      for (;;) {
        // Fetch the next batch while this one is formatted and written.
        const next = batch.length === CURSOR_BATCH_ROWS ? cursor.read(CURSOR_BATCH_ROWS) : undefined;
        next?.catch(() => undefined); // an abort may leave it unawaited; its error is handled below
        for (let i = 0; i < batch.length; i += CSV_CHUNK_ROWS) {
          const chunk = batch.length <= CSV_CHUNK_ROWS ? batch : batch.slice(i, i + CSV_CHUNK_ROWS);
          rows += chunk.length;
          yield stringify(chunk, CSV_OPTIONS);
        }
        if (!next) return;
        batch = await next;
        if (batch.length < CURSOR_BATCH_ROWS) release();
      }
    }

    // A client that leaves mid-way: end the connection now rather than after the pipeline unwinds.
    let clientGone = false;
    res.once('close', () => {
      if (released) return;
      clientGone = !res.writableFinished;
      release(new Error('client closed the connection'));
    });
    pipeline(Readable.from(chunks(), { objectMode: true, highWaterMark: 1 }), res, (err) => {
      if (err) {
        // Client gone, or the query failed mid-way: never leave a half file looking complete.
        res.destroy();
        release(err);
        const aborted = clientGone || /premature close|client closed/i.test(err.message);
        if (aborted) this.logger.log(`export aborted by the client after ${rows} rows`);
        else this.logger.error(`export failed after ${rows} rows: ${err.message}`);
        return;
      }
      release();
      this.logger.log(`exported ${rows} rows in ${Date.now() - started} ms`);
    });
  }
}
