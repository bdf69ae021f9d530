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
  /** Validated against the emulator's paymentStatuses. */
  status?: string;
  /** Provider-specific fields, only those the emulator lists in paymentFields; it validates them. */
  extra?: Record<string, unknown>;
}

export interface SandboxPaymentEmulator {
  /** The provider name used in the API, e.g. "binance_pay". */
  readonly provider: string;
  /** Statuses a payment may be created in; the first is the default. */
  readonly paymentStatuses: readonly string[];
  /** Provider-specific fields `POST /sandbox/payments` accepts besides the common ones (Cobo: tokenId). */
  readonly paymentFields?: readonly string[];
  /** Throws SandboxBadRequest (answered 400) for input the provider does not accept. */
  createPayment(input: CreateSandboxPayment): Promise<SandboxPayment>;
  /** The latest payments, newest first. */
  listPayments(limit: number): Promise<SandboxPayment[]>;
}

export const SANDBOX_PAYMENT_EMULATORS = Symbol('SANDBOX_PAYMENT_EMULATORS');
