import { randomInt, randomUUID } from 'node:crypto';
import { Injectable } from '@nestjs/common';
import { formatFixed, money } from '../../common/money.js';
import { SandboxBadRequest } from '../sandbox-http.js';
import { CreateSandboxPayment, SandboxPayment, SandboxPaymentEmulator } from '../sandbox-payment-emulator.js';
import { AMOUNT_DECIMALS, Beneficiary, LEAN_CURRENCIES, amountNumber, ibanWithCheckDigits } from './lean.rules.js';
import { LeanSandboxStore } from './lean.store.js';

export const LEAN_PROVIDER = 'lean';

export interface LeanPaymentRow {
  id: string;
  customer_id: string;
  intent_id: string;
  payment_destination_id: string;
  status: string;
  reconciliation_status: 'RECONCILED' | 'OUTSTANDING';
  currency: string;
  amount: string;
  reserved_amount: string;
  beneficiary: Beneficiary;
  created_at: Date;
}

/**
 * Statuses `POST /sandbox/payments` may seed a Lean payment in; the first is the default.
 * Lean keeps reconciliation apart from the payment status, so each seed status names both:
 */
const SEED_STATUSES = {
  /** Paid and reconciled: refundable. */
  ACCEPTED_BY_BANK: { status: 'ACCEPTED_BY_BANK', reconciliation: 'RECONCILED' },
  /** The newer lifecycle's paid status, reconciled: refundable. */
  PROCESSED: { status: 'PROCESSED', reconciliation: 'RECONCILED' },
  /** Paid but not reconciled yet: Lean refuses refunds (reconcile it with POST .../reconcile). */
  UNRECONCILED: { status: 'ACCEPTED_BY_BANK', reconciliation: 'OUTSTANDING' },
  PENDING_WITH_BANK: { status: 'PENDING_WITH_BANK', reconciliation: 'OUTSTANDING' },
  FAILED: { status: 'FAILED', reconciliation: 'OUTSTANDING' },
} as const;
type SeedStatus = keyof typeof SEED_STATUSES;

const NAMES = ['Dorsey Benito Cummerata', 'Santiago Keebler', 'Layla Al Mansouri', 'Omar Haddad', 'Fatima Rahman', 'Yusuf Karim'];
const CITIES: Record<string, string[]> = { AED: ['Dubai', 'Abu Dhabi', 'Sharjah'], SAR: ['Riyadh', 'Jeddah', 'Dammam'] };

function digits(n: number): string {
  let out = '';
  for (let i = 0; i < n; i++) out += String(randomInt(0, 10));
  return out;
}

/** The paying account, where refunds go back (AE: 3-digit bank + 16-digit account; SA: 2 + 18). */
function payerAccount(currency: string): Beneficiary {
  const iban = currency === 'SAR' ? ibanWithCheckDigits('SA', `${digits(2)}${digits(18)}`) : ibanWithCheckDigits('AE', `${digits(3)}${digits(16)}`);
  const cities = CITIES[currency] ?? CITIES.AED!;
  return {
    name: NAMES[randomInt(0, NAMES.length)]!,
    iban,
    account_id: randomUUID(),
    city: cities[randomInt(0, cities.length)]!,
  };
}

/** The status `/sandbox/payments` shows: the seed status the payment corresponds to. */
function seedStatusOf(row: LeanPaymentRow): string {
  if (row.reconciliation_status === 'OUTSTANDING' && (row.status === 'ACCEPTED_BY_BANK' || row.status === 'PROCESSED')) {
    return 'UNRECONCILED';
  }
  return row.status;
}

/**
 * Lean's side of `/sandbox/payments` (SandboxPaymentEmulator), and the payments the
 * emulator refunds: `GET /payments/v1/{id}` reads them here.
 */
@Injectable()
export class LeanSandboxPayments implements SandboxPaymentEmulator {
  readonly provider = LEAN_PROVIDER;
  readonly paymentStatuses = Object.keys(SEED_STATUSES) as readonly string[];

  constructor(private readonly store: LeanSandboxStore) {}

  async createPayment(input: CreateSandboxPayment): Promise<SandboxPayment> {
    if (!(LEAN_CURRENCIES as readonly string[]).includes(input.currency)) {
      throw new SandboxBadRequest(`lean payments are in ${LEAN_CURRENCIES.join(' or ')}`);
    }
    if (money(input.amount).decimalPlaces() > AMOUNT_DECIMALS) {
      throw new SandboxBadRequest(`lean amounts have at most ${AMOUNT_DECIMALS} decimals`);
    }
    if (money(input.amount).gte('1e13')) throw new SandboxBadRequest('amount is too large for lean');
    const seed = (input.status ?? this.paymentStatuses[0]) as SeedStatus;
    const mapped = SEED_STATUSES[seed];
    if (!mapped) throw new SandboxBadRequest(`status must be one of ${this.paymentStatuses.join(', ')}`);
    await this.store.ready();
    const [row] = await this.store.db.query<LeanPaymentRow>(
      `INSERT INTO sandbox.lean_payments
         (id, customer_id, intent_id, payment_destination_id, status, reconciliation_status, currency, amount, beneficiary)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
       RETURNING *`,
      [
        randomUUID(),
        randomUUID(),
        randomUUID(),
        randomUUID(),
        mapped.status,
        mapped.reconciliation,
        input.currency,
        input.amount,
        JSON.stringify(payerAccount(input.currency)),
      ],
    );
    return this.toSandboxPayment(row!);
  }

  async listPayments(limit: number): Promise<SandboxPayment[]> {
    await this.store.ready();
    const rows = await this.store.db.query<LeanPaymentRow>(
      'SELECT * FROM sandbox.lean_payments ORDER BY created_at DESC, id LIMIT $1',
      [limit],
    );
    return rows.map((row) => this.toSandboxPayment(row));
  }

  find(id: string): Promise<LeanPaymentRow | undefined> {
    return this.store.db.one<LeanPaymentRow>('SELECT * FROM sandbox.lean_payments WHERE id = $1', [id]);
  }

  /** Control: sets the payment's reconciliation status (Lean reconciles on its own schedule). */
  async setReconciliation(id: string, status: 'RECONCILED' | 'OUTSTANDING'): Promise<LeanPaymentRow | undefined> {
    const [row] = await this.store.db.query<LeanPaymentRow>(
      'UPDATE sandbox.lean_payments SET reconciliation_status = $2 WHERE id = $1 RETURNING *',
      [id, status],
    );
    return row;
  }

  /**
   * Lean's payment object (providers.md §3.9). `reconciliation` is the emulator's way of
   * exposing the reconciliation status next to the payment; Lean's real field is unknown.
   */
  paymentObject(row: LeanPaymentRow): Record<string, unknown> {
    return {
      id: row.id,
      customer_id: row.customer_id,
      intent_id: row.intent_id,
      status: row.status,
      amount: amountNumber(row.amount),
      currency: row.currency,
      payment_destination_id: row.payment_destination_id,
      reconciliation: { status: row.reconciliation_status },
    };
  }

  /** The emulator's own view, for inspection: includes the amount still refundable. */
  inspectionObject(row: LeanPaymentRow): Record<string, unknown> {
    return {
      ...this.paymentObject(row),
      amount: formatFixed(row.amount, AMOUNT_DECIMALS),
      reserved_amount: formatFixed(row.reserved_amount, AMOUNT_DECIMALS),
      beneficiary: row.beneficiary,
      created_at: row.created_at.toISOString(),
    };
  }

  private toSandboxPayment(row: LeanPaymentRow): SandboxPayment {
    return {
      provider: LEAN_PROVIDER,
      paymentId: row.id,
      amount: formatFixed(row.amount, AMOUNT_DECIMALS),
      currency: row.currency,
      status: seedStatusOf(row),
      createdAt: row.created_at,
    };
  }
}
