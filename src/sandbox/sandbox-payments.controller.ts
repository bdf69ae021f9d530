import { Controller, Get, Inject, Logger, Post, Req, Res } from '@nestjs/common';
import type { FastifyReply } from 'fastify';
import { money } from '../common/money.js';
import { SandboxBadRequest, control, type SandboxRequest } from './sandbox-http.js';
import { SANDBOX_PAYMENT_EMULATORS, SandboxPayment, SandboxPaymentEmulator } from './sandbox-payment-emulator.js';

const LIST_LIMIT = 50;
const FIELDS = ['provider', 'amount', 'currency', 'status'];
const AMOUNT_RE = /^(0|[1-9]\d{0,19})(\.\d{1,8})?$/;
const CURRENCY_RE = /^[A-Z0-9]{2,10}$/;

function view(p: SandboxPayment) {
  return { provider: p.provider, paymentId: p.paymentId, amount: p.amount, currency: p.currency, status: p.status };
}

/**
 * `/sandbox/payments`: seeds payments at the emulated providers so refunds have something
 * to refund. Each provider's emulator plugs in through SANDBOX_PAYMENT_EMULATORS.
 */
@Controller('sandbox/payments')
export class SandboxPaymentsController {
  private readonly logger = new Logger('SandboxPayments');
  private readonly byProvider: Map<string, SandboxPaymentEmulator>;
  /** Provider-specific fields some emulator accepts; each emulator accepts only its own. */
  private readonly extraFields: Set<string>;

  constructor(@Inject(SANDBOX_PAYMENT_EMULATORS) private readonly emulators: SandboxPaymentEmulator[]) {
    this.byProvider = new Map(emulators.map((e) => [e.provider, e]));
    this.extraFields = new Set(emulators.flatMap((e) => e.paymentFields ?? []));
  }

  @Get()
  list(@Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => {
      const all = (await Promise.all(this.emulators.map((e) => e.listPayments(LIST_LIMIT)))).flat();
      all.sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime());
      return { body: { data: all.slice(0, LIST_LIMIT).map(view) } };
    });
  }

  // Body read from req (not @Body) so the service's global ValidationPipe does not interfere.
  @Post()
  create(@Req() req: SandboxRequest, @Res() res: FastifyReply): Promise<void> {
    return control(res, this.logger, async () => {
      const body: unknown = req.body;
      if (body === null || typeof body !== 'object' || Array.isArray(body)) {
        throw new SandboxBadRequest('the body must be a JSON object');
      }
      const input = body as Record<string, unknown>;
      const known = (key: string) => FIELDS.includes(key) || this.extraFields.has(key);
      const unknownField = Object.keys(input).find((key) => !known(key));
      if (unknownField) throw new SandboxBadRequest(`unknown field "${unknownField}"`);
      if (typeof input.provider !== 'string') throw new SandboxBadRequest('provider is required');
      const emulator = this.byProvider.get(input.provider);
      if (!emulator) throw new SandboxBadRequest('unsupported provider');
      const extra: Record<string, unknown> = {};
      for (const key of Object.keys(input).filter((k) => !FIELDS.includes(k))) {
        if (!emulator.paymentFields?.includes(key)) {
          throw new SandboxBadRequest(`field "${key}" is not accepted for provider ${emulator.provider}`);
        }
        extra[key] = input[key];
      }
      const { amount, currency, status } = input;
      if (typeof amount !== 'string' || !AMOUNT_RE.test(amount) || money(amount).lte(0)) {
        throw new SandboxBadRequest('amount must be a decimal string greater than 0 with at most 8 decimals');
      }
      if (typeof currency !== 'string' || !CURRENCY_RE.test(currency)) {
        throw new SandboxBadRequest('currency must be 2 to 10 uppercase letters or digits');
      }
      if (status !== undefined && (typeof status !== 'string' || !emulator.paymentStatuses.includes(status))) {
        throw new SandboxBadRequest(`status must be one of ${emulator.paymentStatuses.join(', ')}`);
      }
      const payment = await emulator.createPayment({
        amount,
        currency,
        status: status ?? emulator.paymentStatuses[0],
        extra,
      });
      return { status: 201, body: view(payment) };
    });
  }
}
