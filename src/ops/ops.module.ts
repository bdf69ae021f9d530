import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import { BullBoardModule, InjectBullBoard, type BullBoardInstance, type BullBoardModuleOptions } from '@bull-board/nestjs';
import { Injectable, Module, OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { FastifyInstance } from 'fastify';
import { ApiKeysService } from '../auth/api-keys.service.js';
import { AuthModule } from '../auth/auth.module.js';
import { QueueInspector } from '../metrics/queue-inspector.js';
import { guardOpsBoard } from './ops-auth.js';

/** Where the dashboard is mounted. */
export const OPS_QUEUES_ROUTE = '/ops/queues';

/**
 * Puts the queues on the board, read-only: the dashboard is for looking; retrying, cancelling
 * or re-checking a refund goes through the API (/v1/refunds/...), where it is authorised per
 * refund and recorded as an audited event. Jobs only carry refund ids anyway; the database
 * row is the truth, so removing or retrying a job by hand would achieve nothing useful.
 */
@Injectable()
class OpsBoardQueues implements OnModuleInit {
  constructor(
    @InjectBullBoard() private readonly board: BullBoardInstance,
    private readonly inspector: QueueInspector,
  ) {}

  onModuleInit(): void {
    for (const queue of this.inspector.queues()) {
      this.board.addQueue(new BullMQAdapter(queue, { readOnlyMode: true, allowRetries: false }));
    }
  }
}

/** Installs the dashboard's key check (ops-auth.ts) before the routes are served. */
@Injectable()
class OpsBoardGuard implements OnModuleInit {
  constructor(
    private readonly adapterHost: HttpAdapterHost,
    private readonly keys: ApiKeysService,
  ) {}

  onModuleInit(): void {
    guardOpsBoard(this.adapterHost.httpAdapter.getInstance<FastifyInstance>(), OPS_QUEUES_ROUTE, this.keys);
  }
}

/**
 * Bull Board at /ops/queues (HTTP roles only), guarded by guardOpsBoard (ops and admin
 * API keys, as Bearer or HTTP Basic password).
 */
@Module({
  imports: [
    AuthModule,
    BullBoardModule.forRoot({
      route: OPS_QUEUES_ROUTE,
      // @bull-board/fastify pins its own patch release of @bull-board/api; the two are the
      // same at run time but their private members make TypeScript call them different types.
      adapter: FastifyAdapter as unknown as BullBoardModuleOptions['adapter'],
      boardOptions: { uiConfig: { boardTitle: 'Refund queues' } },
    }),
  ],
  providers: [OpsBoardQueues, OpsBoardGuard],
})
export class OpsModule {}
