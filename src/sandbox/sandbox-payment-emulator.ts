/**
 * What a provider emulator implements so `/sandbox/payments` can seed and list its
 * payments. Each emulator registers under SANDBOX_PAYMENT_EMULATORS (see sandbox.module.ts).
 */
export interface SandboxPayment {
  provider: string;
  /** The provider's own id of the payment (Binance: the prepayId). */
  paymentId: string;
  /** Decimal string, as the provider reports it. */
  amount: string;
  currency: string;
  status: string;
  createdAt: Date;
}

export interface CreateSandboxPayment {
  /** Validated: a decimal string > 0 with at most 8 decimals. */
  amount: string;
  /** Validated: 2-10 uppercase letters or digits. */
  currency: string;
  /** Not validated yet: each emulator accepts its own statuses. */
  status?: string;
}

export interface SandboxPaymentEmulator {
  /** The provider name used in the API, e.g. "binance_pay". */
  readonly provider: string;
  /** Statuses a payment may be created in; the first is the default. */
  readonly paymentStatuses: readonly string[];
  createPayment(input: CreateSandboxPayment): Promise<SandboxPayment>;
  /** The latest payments, newest first. */
  listPayments(limit: number): Promise<SandboxPayment[]>;
}

export const SANDBOX_PAYMENT_EMULATORS = Symbol('SANDBOX_PAYMENT_EMULATORS');
