import { Controller, Get, Logger, Post, Put, Req, Res } from '@nestjs/common';
import type { RawBodyRequest } from '@nestjs/common';
import type { FastifyReply } from 'fastify';
import { SandboxControlError, SandboxFaultsController, control, type SandboxRequest } from '../sandbox-http.js';
import { LeanSandboxEmulator } from './lean.emulator.js';
import { LeanSandboxHttp, leanFormBody, leanJsonBody } from './lean.http.js';
import {
  LeanError,
  isUuid,
  parseCreateRefunds,
  parseProcessRefunds,
  parseRefundListQuery,
  parseTokenRequest,
  refundReasons,
} from './lean.rules.js';

function queryString(req: SandboxRequest, name: string): string | undefined {
  const value = req.query[name];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** `/sandbox/lean-auth`: Lean's OAuth2 host (client credentials only). */
@Controller('sandbox/lean-auth')
export class LeanAuthEmulatorController {
  constructor(
    private readonly http: LeanSandboxHttp,
    private readonly emulator: LeanSandboxEmulator,
  ) {}

  @Post('oauth2/token')
  token(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, { kind: 'token' }, async ({ faults }) => {
      const form = parseTokenRequest(leanFormBody(req));
      return { status: 200, body: JSON.stringify(await this.emulator.issueToken(form, faults)) };
    });
  }
}

/**
 * `/sandbox/lean`: Lean's refund and payment API (bearer tokens), plus fault settings and
 * inspection of the emulator's records for tests. Bodies are read from req.rawBody, so the
 * service's global ValidationPipe stays out of the way.
 */
@Controller('sandbox/lean')
export class LeanApiEmulatorController extends SandboxFaultsController {
  constructor(
    private readonly http: LeanSandboxHttp,
    private readonly emulator: LeanSandboxEmulator,
  ) {
    super(new Logger('LeanSandbox'), emulator);
  }

  // --- Lean API ------------------------------------------------------------------------------

  @Get('payments/v1/:paymentId')
  getPayment(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, { kind: 'api', scope: 'payment.read' }, async () => {
      const id = String(req.params.paymentId);
      if (!isUuid(id)) throw new LeanError('INVALID_PARAMETERS', 'payment_id must be a UUID');
      return { status: 200, body: this.emulator.json(await this.emulator.getPayment(id)) };
    });
  }

  @Post('payouts/refunds')
  createRefunds(@Req() req: RawBodyRequest<SandboxRequest>, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, { kind: 'api', scope: 'payout.write' }, async ({ faults }) => {
      const items = parseCreateRefunds(leanJsonBody(req));
      return { status: 201, body: this.emulator.json(await this.emulator.createRefunds(items, faults)) };
    });
  }

  @Put('payouts/refunds')
  processRefunds(@Req() req: RawBodyRequest<SandboxRequest>, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, { kind: 'api', scope: 'payout.write' }, async ({ faults }) => {
      const items = parseProcessRefunds(leanJsonBody(req));
      return { status: 200, body: this.emulator.json(await this.emulator.processRefunds(items, faults)) };
    });
  }

  @Get('payouts/refunds/reasons')
  reasons(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, { kind: 'api', scope: 'payout.read' }, async () => ({
      status: 200,
      body: JSON.stringify(refundReasons()),
    }));
  }

  @Get('payouts/refunds')
  listRefunds(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    return this.http.handle(req, res, { kind: 'api', scope: 'payout.read' }, async () => {
      const query = parseRefundListQuery(req.query as Record<string, unknown>);
      return { status: 200, body: this.emulator.json(await this.emulator.listRefunds(query)) };
    });
  }

  // --- control and inspection of the emulator's own records -----------------------------------

  @Post('refunds/:refundId/settle')
  settle(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => {
      const refundId = String(req.params.refundId);
      if (!isUuid(refundId)) throw new SandboxControlError(404, 'refund not found');
      const status = (req.body as { status?: unknown } | undefined)?.status;
      if (status !== 'COMPLETED' && status !== 'FAILED') {
        throw new SandboxControlError(400, 'status must be COMPLETED (the configured success status) or FAILED');
      }
      return { body: JSON.parse(this.emulator.json(await this.emulator.forceSettle(refundId.toLowerCase(), status))) };
    });
  }

  @Get('refunds')
  inspectRefunds(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => {
      const paymentId = queryString(req, 'payment_id');
      if (paymentId !== undefined && !isUuid(paymentId)) throw new SandboxControlError(400, 'payment_id must be a UUID');
      return { body: { data: JSON.parse(this.emulator.json(await this.emulator.inspectRefunds(paymentId?.toLowerCase()))) } };
    });
  }

  @Post('payments/:paymentId/reconcile')
  reconcile(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => {
      const paymentId = String(req.params.paymentId);
      if (!isUuid(paymentId)) throw new SandboxControlError(404, 'payment not found');
      const status = (req.body as { status?: unknown } | undefined)?.status ?? 'RECONCILED';
      if (status !== 'RECONCILED' && status !== 'OUTSTANDING') {
        throw new SandboxControlError(400, 'status must be RECONCILED or OUTSTANDING');
      }
      return { body: await this.emulator.reconcilePayment(paymentId.toLowerCase(), status) };
    });
  }

  @Get('payments/:paymentId')
  inspectPayment(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => {
      const paymentId = String(req.params.paymentId);
      const payment = isUuid(paymentId) ? await this.emulator.inspectPayment(paymentId.toLowerCase()) : undefined;
      if (!payment) throw new SandboxControlError(404, 'payment not found');
      return { body: JSON.parse(this.emulator.json(payment)) };
    });
  }

  @Get('webhooks')
  inspectWebhooks(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => {
      const paymentId = queryString(req, 'payment_id');
      if (paymentId !== undefined && !isUuid(paymentId)) throw new SandboxControlError(400, 'payment_id must be a UUID');
      return { body: { data: await this.emulator.inspectWebhooks(paymentId?.toLowerCase()) } };
    });
  }

  @Get('tokens/stats')
  tokenStats(@Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => ({ body: await this.emulator.tokenStats() }));
  }
}
