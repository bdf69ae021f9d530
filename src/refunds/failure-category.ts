/**
 * What ops can do about a failed refund (issue 5): `retryable` causes may clear by
 * themselves or after a fix on our side (provider outage, merchant balance too low at the
 * provider, our credentials), so an ops retry can succeed; `final` ones will fail again
 * the same way (amount above what the provider allows, unknown or closed payment, a human
 * at the provider said no). Every failed refund can be retried by ops; the category only
 * tells them whether it is worth it. Unknown codes are `final`: a person should look first.
 */
const RETRYABLE = new Set([
  // Binance Pay: unknown error, our auth/signature/clock, merchant balance, refund failed at settlement.
  '400000',
  '400002',
  '400003',
  '400004',
  '400005',
  '400304',
  'REFUND_FAIL',
  'REFUND_REJECTED',
  // Cobo: internal, rate limits, our auth, insufficient balance (emulator's code), on-chain failure.
  '2000',
  '2010',
  '2026',
  '2022',
  '2023',
  '2024',
  '2025',
  '12002',
  'Failed',
  'PartiallyCompleted',
  // Lean: payout failed at the bank, rate limit, server error, our access level.
  'FAILED',
  'RATE_LIMIT_EXCEEDED',
  'INTERNAL_SERVER_ERROR',
  'INCORRECT_ACCESS_LEVEL',
  'INSUFFICIENT_ACCESS_LEVEL',
  'provider_failed',
]);

export type FailureCategory = 'retryable' | 'final';

export function failureCategory(code: string | null | undefined): FailureCategory {
  return code && RETRYABLE.has(code) ? 'retryable' : 'final';
}
