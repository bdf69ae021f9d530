import { Controller, Get } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiTags } from '@nestjs/swagger';
import { Roles } from '../auth/auth-context.js';
import { ApiKeyAuth } from '../openapi/problems.js';
import { Problem } from '../common/problem.js';
import { QUEUE_JOB_STATES, waitingAgeSeconds } from '../metrics/metrics-collector.service.js';
import { QueueInspector } from '../metrics/queue-inspector.js';

/** A queue read slower than this answers 503: Redis is away or overloaded. */
export const QUEUE_READ_TIMEOUT_MS = 2_000;

export interface QueueHealth {
  name: string;
  counts: Record<(typeof QUEUE_JOB_STATES)[number], number>;
  /** How long the oldest waiting job has been due, in seconds (0 when none waits). */
  oldestWaitingSeconds: number;
}

/**
 * `GET /v1/queues` (ops, admin) → 200 `{ "data": [{ "name", "counts": { "waiting",
 * "active", "delayed", "failed", "completed" }, "oldestWaitingSeconds" }], "readAt" }`: one
 * entry per BullMQ queue (`refunds-<provider>`, `merchant-webhooks`), read live from Redis
 * the way the `refund_queue_*` metrics are (one getJobCounts and one single-job read per
 * queue). Read-only, like the Bull Board at /ops/queues; 503 `service_unavailable` when
 * Redis does not answer within 2 s. Counts are jobs, not refunds: a refund's job parks in
 * `delayed` between polls.
 */
@ApiTags('Operations')
@ApiKeyAuth()
@Controller('v1/queues')
export class QueuesController {
  constructor(private readonly inspector: QueueInspector) {}

  @Get()
  @Roles('ops')
  @ApiOperation({
    summary: 'Queue health (ops)',
    description:
      'Jobs per BullMQ queue (`refunds-<provider>`, `merchant-webhooks`) and state, and how long the oldest waiting job has been due, read live from Redis. Read-only; 503 when Redis does not answer within 2 s. Counts are jobs, not refunds: a refund’s job waits in `delayed` between provider checks.',
  })
  @ApiOkResponse({
    description: 'One entry per queue.',
    schema: {
      type: 'object',
      required: ['data', 'readAt'],
      properties: {
        data: {
          type: 'array',
          items: {
            type: 'object',
            required: ['name', 'counts', 'oldestWaitingSeconds'],
            properties: {
              name: { type: 'string', example: 'refunds-binance_pay' },
              counts: {
                type: 'object',
                required: [...QUEUE_JOB_STATES],
                properties: Object.fromEntries(QUEUE_JOB_STATES.map((s) => [s, { type: 'integer', minimum: 0 }])),
              },
              oldestWaitingSeconds: { type: 'number', minimum: 0 },
            },
          },
        },
        readAt: { type: 'string', format: 'date-time' },
      },
    },
  })
  async list(): Promise<{ data: QueueHealth[]; readAt: string }> {
    const now = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const read = Promise.all(
      this.inspector.queues().map(async (queue): Promise<QueueHealth> => {
        const [counts, oldest] = await Promise.all([
          queue.getJobCounts(...QUEUE_JOB_STATES),
          // The wait list is FIFO: its tail is the job that has waited longest.
          queue.getJobs(['wait'], 0, 0, true),
        ]);
        const byState = Object.fromEntries(QUEUE_JOB_STATES.map((s) => [s, counts[s] ?? 0])) as QueueHealth['counts'];
        const age = oldest[0] ? waitingAgeSeconds(oldest[0], now) : 0;
        return { name: queue.name, counts: byState, oldestWaitingSeconds: Math.round(age * 10) / 10 };
      }),
    );
    try {
      const data = await Promise.race([
        read,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('timeout')), QUEUE_READ_TIMEOUT_MS);
        }),
      ]);
      return { data, readAt: new Date(now).toISOString() };
    } catch {
      read.catch(() => undefined);
      throw new Problem('service_unavailable', 'The queues cannot be read right now (Redis did not answer).');
    } finally {
      clearTimeout(timer);
    }
  }
}
