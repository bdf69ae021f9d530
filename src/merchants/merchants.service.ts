import { Injectable } from '@nestjs/common';
import { formatAmount, isDecimalString, money } from '../common/money.js';
import { Problem } from '../common/problem.js';
import { Database, Sql } from '../database/database.js';
import { PROVIDERS } from '../providers/provider.js';

export interface MerchantView {
  id: string;
  name: string | null;
  approvalThresholds: Record<string, string>;
  cobo: { merchantId: string } | null;
  lean: { merchantId: string } | null;
  binancePay: { merchantId: string } | null;
  createdAt: string;
  updatedAt: string;
}

interface MerchantRow {
  id: string;
  name: string | null;
  approval_thresholds: Record<string, string>;
  provider_accounts: Record<string, { merchantId?: string }>;
  created_at: Date;
  updated_at: Date;
}

export interface MerchantInput {
  name?: string;
  approvalThresholds?: Record<string, unknown>;
  cobo?: { merchantId?: unknown } | null;
  lean?: { merchantId?: unknown } | null;
  binancePay?: { merchantId?: unknown } | null;
}

const ACCOUNT_KEYS: Record<string, 'cobo' | 'lean' | 'binancePay'> = { cobo: 'cobo', lean: 'lean', binance_pay: 'binancePay' };

/** Merchants: approval thresholds per currency and their account ids at each provider (contract §6). */
@Injectable()
export class MerchantsService {
  constructor(private readonly db: Database) {}

  async get(id: string): Promise<MerchantView> {
    const row = await this.db.one<MerchantRow>(`SELECT * FROM merchants WHERE id = $1`, [id]);
    if (!row) throw new Problem('not_found', 'No such merchant.');
    return view(row);
  }

  /** PUT: the whole merchant (absent thresholds/accounts are cleared), created if new. */
  async put(id: string, input: MerchantInput): Promise<MerchantView> {
    const errors: { field: string; message: string }[] = [];
    const thresholds: Record<string, string> = {};
    const t = input.approvalThresholds ?? {};
    if (typeof t !== 'object' || Array.isArray(t) || t === null) {
      errors.push({ field: 'approvalThresholds', message: 'must be an object of currency to decimal string' });
    } else {
      for (const [currency, amount] of Object.entries(t)) {
        if (!/^[A-Z0-9]{2,12}$/.test(currency)) errors.push({ field: `approvalThresholds.${currency}`, message: 'currency must be 2-12 upper-case letters or digits' });
        else if (!isDecimalString(amount) || money(amount).lte(0)) errors.push({ field: `approvalThresholds.${currency}`, message: 'must be a decimal string above 0' });
        else thresholds[currency] = formatAmount(amount);
      }
    }
    const accounts: Record<string, { merchantId: string }> = {};
    for (const provider of PROVIDERS) {
      const key = ACCOUNT_KEYS[provider];
      const block = input[key];
      if (block === undefined || block === null) continue;
      if (typeof block !== 'object' || typeof block.merchantId !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(block.merchantId)) {
        errors.push({ field: `${key}.merchantId`, message: 'must be 1-128 printable characters' });
        continue;
      }
      accounts[provider] = { merchantId: block.merchantId };
    }
    if (errors.length) throw Problem.validation(errors);
    const [row] = await this.db.query<MerchantRow>(
      `INSERT INTO merchants (id, name, approval_thresholds, provider_accounts) VALUES ($1, $2, $3, $4)
       ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, approval_thresholds = EXCLUDED.approval_thresholds,
                                      provider_accounts = EXCLUDED.provider_accounts, updated_at = now()
       RETURNING *`,
      [id, input.name ?? null, thresholds, accounts],
    );
    return view(row);
  }

  /** The threshold at or above which a refund in `currency` needs an ops approval (none: null). */
  async approvalThreshold(sql: Sql, merchantId: string, currency: string): Promise<string | null> {
    const [row] = await sql.query<{ threshold: string | null }>(
      `SELECT approval_thresholds->>$2 AS threshold FROM merchants WHERE id = $1`,
      [merchantId, currency],
    );
    return row?.threshold ?? null;
  }
}

function view(row: MerchantRow): MerchantView {
  const account = (p: string) => (row.provider_accounts?.[p]?.merchantId ? { merchantId: row.provider_accounts[p].merchantId! } : null);
  return {
    id: row.id,
    name: row.name,
    approvalThresholds: row.approval_thresholds ?? {},
    cobo: account('cobo'),
    lean: account('lean'),
    binancePay: account('binance_pay'),
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}
