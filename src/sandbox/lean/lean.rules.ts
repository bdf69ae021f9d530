import { KeyObject, createHmac, randomUUID, sign, timingSafeEqual, verify } from 'node:crypto';
import { LosslessNumber, isLosslessNumber, parse, stringify } from 'lossless-json';
import { Money, formatAmount, money } from '../../common/money.js';

/**
 * The Lean Pay-by-Bank refund API's rules (providers.md §3, §4), as pure functions so they
 * can be tested without a database. The emulator service applies them under row locks.
 */

// ---------------------------------------------------------------------------------------
// Errors (providers.md §3.7): `{status, message, timestamp}` with Lean's status strings.

export const LEAN_ERROR_HTTP = {
  INVALID_PARAMETERS: 400,
  MISSING_PARAMETERS: 400,
  UNAUTHORIZED: 401,
  INCORRECT_ACCESS_LEVEL: 403,
  INSUFFICIENT_ACCESS_LEVEL: 403,
  INVALID_URL: 404,
  INVALID_HTTP_METHOD: 405,
  RATE_LIMIT_EXCEEDED: 429,
  INTERNAL_SERVER_ERROR: 500,
} as const;
export type LeanErrorStatus = keyof typeof LEAN_ERROR_HTTP;

/** An error to answer in Lean's envelope; the HTTP status follows from the status string. */
export class LeanError extends Error {
  constructor(
    readonly status: LeanErrorStatus,
    message: string,
  ) {
    super(message);
  }

  get httpStatus(): number {
    return LEAN_ERROR_HTTP[this.status];
  }
}

export function leanErrorBody(status: LeanErrorStatus, message: string, now = new Date()): string {
  return JSON.stringify({ status, message, timestamp: now.toISOString() });
}

const invalid = (message: string) => new LeanError('INVALID_PARAMETERS', message);
const missing = (message: string) => new LeanError('MISSING_PARAMETERS', message);

// ---------------------------------------------------------------------------------------
// Routes: which scope each API route needs; also used to answer unknown URLs and methods
// in Lean's format and to authenticate before reporting an unparsable body.

export const LEAN_API_PREFIX = '/sandbox/lean';
export const LEAN_AUTH_PREFIX = '/sandbox/lean-auth';

export type LeanRoute =
  | { kind: 'api'; scope: string }
  | { kind: 'token' }
  | { kind: 'control' };

interface RouteDef {
  pattern: RegExp;
  methods: Record<string, LeanRoute>;
}

const UUIDISH = '[^/]+';
const CONTROL: LeanRoute = { kind: 'control' };
const ROUTES: RouteDef[] = [
  { pattern: /^\/sandbox\/lean-auth\/oauth2\/token\/?$/, methods: { POST: { kind: 'token' } } },
  {
    pattern: /^\/sandbox\/lean\/payouts\/refunds\/?$/,
    methods: {
      GET: { kind: 'api', scope: 'payout.read' },
      POST: { kind: 'api', scope: 'payout.write' },
      PUT: { kind: 'api', scope: 'payout.write' },
    },
  },
  { pattern: /^\/sandbox\/lean\/payouts\/refunds\/reasons\/?$/, methods: { GET: { kind: 'api', scope: 'payout.read' } } },
  { pattern: new RegExp(`^/sandbox/lean/payments/v1/${UUIDISH}/?$`), methods: { GET: { kind: 'api', scope: 'payment.read' } } },
  { pattern: /^\/sandbox\/lean\/faults\/?$/, methods: { GET: CONTROL, PUT: CONTROL, DELETE: CONTROL } },
  { pattern: /^\/sandbox\/lean\/refunds\/?$/, methods: { GET: CONTROL } },
  { pattern: new RegExp(`^/sandbox/lean/refunds/${UUIDISH}/settle/?$`), methods: { POST: CONTROL } },
  { pattern: new RegExp(`^/sandbox/lean/payments/${UUIDISH}/reconcile/?$`), methods: { POST: CONTROL } },
  { pattern: new RegExp(`^/sandbox/lean/payments/${UUIDISH}/?$`), methods: { GET: CONTROL } },
  { pattern: /^\/sandbox\/lean\/webhooks\/?$/, methods: { GET: CONTROL } },
  { pattern: /^\/sandbox\/lean\/tokens\/stats\/?$/, methods: { GET: CONTROL } },
];

/** The route a request path (no query) and method address: found, wrong method, or unknown. */
export function resolveLeanRoute(method: string, path: string): LeanRoute | 'wrong_method' | undefined {
  for (const route of ROUTES) {
    if (!route.pattern.test(path)) continue;
    return route.methods[method.toUpperCase()] ?? (method.toUpperCase() === 'HEAD' ? route.methods.GET : undefined) ?? 'wrong_method';
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------
// OAuth2 client credentials and RS256 access tokens (providers.md §3.2)

/** Scopes of an `api` token, as in the token sample of Lean's Postman collection. */
export const API_TOKEN_SCOPES = [
  'customer.read',
  'customer.write',
  'destination.write',
  'report.read',
  'bank.read',
  'webhook.read',
  'payment.read',
  'intent.write',
  'destination.read',
  'payout.write',
  'deposit.read',
  'report.write',
  'data.read',
  'payout.read',
  'reconciliation.read',
  'file.read',
] as const;

/** Scopes of a `customer.<id>` token (Link SDK): no payout.* at all. */
export const CUSTOMER_TOKEN_SCOPES = [
  'customer.read',
  'beneficiary.write',
  'payment.write',
  'payment.read',
  'destination.read',
  'connect.write',
  'connect.read',
  'application.read',
  'bank.read',
  'key.read',
] as const;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID_RE.test(value);
}

export interface TokenRequest {
  clientId: string;
  clientSecret: string;
  /** "api" or "customer.<uuid>", as sent. */
  scope: string;
  customerId?: string;
}

/**
 * Validates the form fields of `POST /oauth2/token` (client authentication is separate).
 * Absent fields are MISSING_PARAMETERS, wrong values INVALID_PARAMETERS.
 */
export function parseTokenRequest(form: Record<string, unknown>): TokenRequest {
  const field = (name: string): string => {
    const value = form[name];
    if (value === undefined || value === '') throw missing(`${name} is required`);
    if (typeof value !== 'string') throw invalid(`${name} must be given once`);
    return value;
  };
  const clientId = field('client_id');
  const clientSecret = field('client_secret');
  const grantType = field('grant_type');
  if (grantType !== 'client_credentials') throw invalid('grant_type must be client_credentials');
  const scope = field('scope');
  if (scope === 'api') return { clientId, clientSecret, scope };
  const customer = /^customer\.(.+)$/.exec(scope);
  if (customer && isUuid(customer[1])) return { clientId, clientSecret, scope, customerId: customer[1]!.toLowerCase() };
  throw invalid('scope must be api or customer.<customer_id>');
}

/** Constant-time comparison of two secrets of any length. */
export function secretsEqual(given: string, expected: string): boolean {
  const a = Buffer.from(given, 'utf8');
  const b = Buffer.from(expected, 'utf8');
  return a.length === b.length && timingSafeEqual(a, b);
}

export interface TokenClaims {
  sub: string;
  aud: string;
  nbf: number;
  /** An array of scope strings, as in Lean's real tokens. */
  scope: string[];
  iss: string;
  exp: number;
  iat: number;
  jti: string;
  applications: Array<{ id: string }>;
  customers?: Array<{ id: string }>;
}

export function buildTokenClaims(opts: {
  clientId: string;
  issuer: string;
  audience: string;
  ttlSeconds: number;
  nowMs: number;
  customerId?: string;
}): TokenClaims {
  const iat = Math.floor(opts.nowMs / 1000);
  const claims: TokenClaims = {
    sub: opts.clientId,
    aud: opts.audience,
    nbf: iat,
    scope: [...(opts.customerId ? CUSTOMER_TOKEN_SCOPES : API_TOKEN_SCOPES)],
    iss: opts.issuer,
    exp: iat + opts.ttlSeconds,
    iat,
    jti: randomUUID(),
    applications: [{ id: opts.clientId }],
  };
  if (opts.customerId) claims.customers = [{ id: opts.customerId }];
  return claims;
}

export function signJwt(claims: object, kid: string, privateKey: KeyObject): string {
  const header = Buffer.from(JSON.stringify({ kid, alg: 'RS256' })).toString('base64url');
  const payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
  const input = `${header}.${payload}`;
  return `${input}.${sign('RSA-SHA256', Buffer.from(input), privateKey).toString('base64url')}`;
}

export interface VerifiedToken {
  clientId: string;
  scopes: string[];
}

/**
 * Checks a bearer token: RS256 signature by our key (alg and kid pinned), issuer,
 * audience, not-before and expiry. Throws LeanError UNAUTHORIZED on any failure.
 */
export function verifyAccessToken(
  authorization: string | undefined,
  opts: { publicKey: KeyObject; kid: string; issuer: string; audience: string; nowMs: number },
): VerifiedToken {
  const unauthorized = (message: string) => new LeanError('UNAUTHORIZED', message);
  if (!authorization) throw unauthorized('Full authentication is required to access this resource');
  const match = /^Bearer +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+) *$/i.exec(authorization);
  if (!match) throw unauthorized('Malformed Authorization header; expected "Bearer <access token>"');
  const [headerB64, payloadB64, signatureB64] = match[1]!.split('.') as [string, string, string];
  let header: { alg?: unknown; kid?: unknown };
  let claims: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(headerB64, 'base64url').toString('utf8'));
    claims = JSON.parse(Buffer.from(payloadB64, 'base64url').toString('utf8'));
  } catch {
    throw unauthorized('Invalid access token');
  }
  if (header?.alg !== 'RS256' || header.kid !== opts.kid || claims === null || typeof claims !== 'object') {
    throw unauthorized('Invalid access token');
  }
  const signed = verify(
    'RSA-SHA256',
    Buffer.from(`${headerB64}.${payloadB64}`),
    opts.publicKey,
    Buffer.from(signatureB64, 'base64url'),
  );
  if (!signed) throw unauthorized('Invalid access token signature');
  if (claims.iss !== opts.issuer || claims.aud !== opts.audience) throw unauthorized('Access token was not issued for this API');
  const nowSec = opts.nowMs / 1000;
  if (typeof claims.exp !== 'number' || nowSec >= claims.exp) throw unauthorized('Access token expired');
  if (typeof claims.nbf === 'number' && nowSec < claims.nbf) throw unauthorized('Access token not yet valid');
  if (typeof claims.sub !== 'string') throw unauthorized('Invalid access token');
  // Lean's tokens carry an array; a space-separated string (RFC 9068) is accepted as well.
  const scopes = Array.isArray(claims.scope)
    ? claims.scope.filter((s): s is string => typeof s === 'string')
    : typeof claims.scope === 'string'
      ? claims.scope.split(' ').filter(Boolean)
      : [];
  return { clientId: claims.sub, scopes };
}

export function requireScope(token: VerifiedToken, scope: string): void {
  if (!token.scopes.includes(scope)) {
    throw new LeanError('INSUFFICIENT_ACCESS_LEVEL', `The access token lacks the ${scope} scope required here`);
  }
}

// ---------------------------------------------------------------------------------------
// Refunds (providers.md §3.3-3.5)

export const REASON_CODES = {
  CUSTOMER_REQUEST: 'The customer asked for a refund',
  DUPLICATED_PAYMENT: 'The customer paid twice for the same order',
  FRAUDULENT_PAYMENT: 'The payment was fraudulent',
  ORDER_CANCELLED: 'The order was cancelled',
} as const;
export type ReasonCode = keyof typeof REASON_CODES;

export function refundReasons(): Array<{ code: ReasonCode; description: string }> {
  return (Object.keys(REASON_CODES) as ReasonCode[]).map((code) => ({ code, description: REASON_CODES[code] }));
}

/** Statuses a refund can have besides the configurable final success status. */
export const FIXED_REFUND_STATUSES = ['CREATED', 'APPROVED', 'REJECTED', 'FAILED'] as const;
/** Refunds in these statuses no longer hold any of the payment's amount. */
export const RELEASED_STATUSES = ['REJECTED', 'FAILED'] as const;

/** Amounts are JSON numbers in major units with at most 2 decimals (AED, SAR). */
export const AMOUNT_DECIMALS = 2;
/** 13 integer digits + 2 decimals: exact as an IEEE double, fits numeric(20,2). */
const MAX_AMOUNT = money('9999999999999.99');
export const MAX_BATCH_ITEMS = 100;
const MAX_TEXT = 255;

export interface CreateRefundItem {
  index: number;
  paymentId: string;
  amount: Money;
  currency: string;
  reasonCode: ReasonCode;
  description: string | null;
  externalReference: string | null;
}

export interface ProcessRefundItem {
  index: number;
  refundId: string;
  status: 'APPROVED' | 'REJECTED';
}

/** One item's outcome of validation: the item, or why it was refused. */
export type Checked<T> = { ok: true; index: number; item: T } | { ok: false; index: number; error: LeanError };

/** Parses a request body exactly: numbers stay LosslessNumber (10.1 stays "10.1"). */
export function parseLeanJson(raw: string): unknown {
  if (raw.trim() === '') throw invalid('The request body must be a JSON array');
  try {
    return parse(raw);
  } catch (err) {
    throw invalid(`Malformed JSON request body: ${(err as Error).message}`);
  }
}

/** A parsed JSON object (lossless-json numbers are objects too, so they are excluded). */
function isJsonObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && !isLosslessNumber(value);
}

function requireArray(body: unknown): unknown[] {
  if (!Array.isArray(body)) throw invalid('The request body must be a JSON array');
  if (body.length === 0) throw invalid('The request body must hold at least one item');
  if (body.length > MAX_BATCH_ITEMS) throw invalid(`At most ${MAX_BATCH_ITEMS} items may be sent at once`);
  return body;
}

function optionalText(item: Record<string, unknown>, name: string, at: string): string | null {
  const value = item[name];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') throw invalid(`${at}.${name} must be a string`);
  if (value.length > MAX_TEXT) throw invalid(`${at}.${name} must be at most ${MAX_TEXT} characters`);
  return value;
}

/** Reads a JSON number exactly; refuses strings, zero, negatives, >2 decimals and huge values. */
export function parseRefundAmount(value: unknown, at: string): Money {
  if (value === undefined || value === null) throw missing(`${at}.amount is required`);
  if (!isLosslessNumber(value)) throw invalid(`${at}.amount must be a JSON number`);
  let amount: Money;
  try {
    amount = money(value.value);
  } catch {
    throw invalid(`${at}.amount is not a number`);
  }
  if (!amount.isFinite() || amount.lte(0)) throw invalid(`${at}.amount must be greater than 0`);
  if (amount.decimalPlaces() > AMOUNT_DECIMALS) throw invalid(`${at}.amount must have at most ${AMOUNT_DECIMALS} decimals`);
  if (amount.gt(MAX_AMOUNT)) throw invalid(`${at}.amount is too large`);
  return amount;
}

function checkCreateItem(raw: unknown, index: number): CreateRefundItem {
  const at = `[${index}]`;
  if (!isJsonObject(raw)) throw invalid(`${at} must be a JSON object`);
  const item = raw;
  if (item.payment_id === undefined || item.payment_id === null) throw missing(`${at}.payment_id is required`);
  if (!isUuid(item.payment_id)) throw invalid(`${at}.payment_id must be a UUID`);
  const amount = parseRefundAmount(item.amount, at);
  if (item.currency === undefined || item.currency === null) throw missing(`${at}.currency is required`);
  if (typeof item.currency !== 'string' || !/^[A-Z]{3}$/.test(item.currency)) {
    throw invalid(`${at}.currency must be an ISO 4217 code such as AED or SAR`);
  }
  if (item.reason_code === undefined || item.reason_code === null) throw missing(`${at}.reason_code is required`);
  if (typeof item.reason_code !== 'string' || !(item.reason_code in REASON_CODES)) {
    throw invalid(`${at}.reason_code must be one of ${Object.keys(REASON_CODES).join(', ')}`);
  }
  return {
    index,
    paymentId: item.payment_id.toLowerCase(),
    amount,
    currency: item.currency,
    reasonCode: item.reason_code as ReasonCode,
    description: optionalText(item, 'description', at),
    externalReference: optionalText(item, 'external_reference', at),
  };
}

/** Validates the shape of a create body; per-item failures are returned, not thrown. */
export function parseCreateRefunds(body: unknown): Array<Checked<CreateRefundItem>> {
  return requireArray(body).map((raw, index) => {
    try {
      return { ok: true, index, item: checkCreateItem(raw, index) };
    } catch (err) {
      if (err instanceof LeanError) return { ok: false, index, error: err };
      throw err;
    }
  });
}

function checkProcessItem(raw: unknown, index: number): ProcessRefundItem {
  const at = `[${index}]`;
  if (!isJsonObject(raw)) throw invalid(`${at} must be a JSON object`);
  const item = raw;
  if (item.refund_id === undefined || item.refund_id === null) throw missing(`${at}.refund_id is required`);
  if (!isUuid(item.refund_id)) throw invalid(`${at}.refund_id must be a UUID`);
  if (item.status === undefined || item.status === null) throw missing(`${at}.status is required`);
  if (item.status !== 'APPROVED' && item.status !== 'REJECTED') throw invalid(`${at}.status must be APPROVED or REJECTED`);
  return { index, refundId: item.refund_id.toLowerCase(), status: item.status };
}

export function parseProcessRefunds(body: unknown): Array<Checked<ProcessRefundItem>> {
  return requireArray(body).map((raw, index) => {
    try {
      return { ok: true, index, item: checkProcessItem(raw, index) };
    } catch (err) {
      if (err instanceof LeanError) return { ok: false, index, error: err };
      throw err;
    }
  });
}

export interface RefundListQuery {
  status?: string;
  paymentId?: string;
  page: number;
  size: number;
}

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 100;

/** `GET /payouts/refunds` query: status, size (1-100, default 50), page (0-based), payment_id. */
export function parseRefundListQuery(query: Record<string, unknown>): RefundListQuery {
  const single = (name: string): string | undefined => {
    const value = query[name];
    if (value === undefined || value === '') return undefined;
    if (typeof value !== 'string') throw invalid(`${name} must be given once`);
    return value;
  };
  const int = (name: string, fallback: number, min: number, max: number): number => {
    const raw = single(name);
    if (raw === undefined) return fallback;
    if (!/^\d{1,9}$/.test(raw) || Number(raw) < min || Number(raw) > max) {
      throw invalid(`${name} must be a whole number between ${min} and ${max}`);
    }
    return Number(raw);
  };
  const status = single('status');
  if (status !== undefined && !/^[A-Z][A-Z_]{0,39}$/.test(status)) throw invalid('status is not a refund status');
  const paymentId = single('payment_id');
  if (paymentId !== undefined && !isUuid(paymentId)) throw invalid('payment_id must be a UUID');
  return {
    status,
    paymentId: paymentId?.toLowerCase(),
    size: int('size', DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
    page: int('page', 0, 0, 100_000_000),
  };
}

// ---------------------------------------------------------------------------------------
// Wire shapes

export interface Beneficiary {
  name: string;
  iban: string;
  account_id: string;
  city: string;
}

/** A refund as stored, with created_at already rendered with microseconds. */
export interface RefundView {
  refundId: string;
  paymentId: string;
  status: string;
  amount: string;
  currency: string;
  reasonCode: string;
  description: string | null;
  externalReference: string | null;
  beneficiary: Beneficiary;
  createdAt: string;
  createdBy: string;
  actionedBy: string | null;
}

/** A JSON number with exactly the digits of a decimal amount ("10.10" -> 10.1). */
export function amountNumber(value: string | Money): LosslessNumber {
  return new LosslessNumber(formatAmount(value));
}

/** The smaller object the create call answers (no deposit_*, created_*, actioned_by, refund_intent_id). */
export function createdRefundObject(r: RefundView): Record<string, unknown> {
  return {
    refund_id: r.refundId,
    payment_id: r.paymentId,
    status: r.status,
    amount: amountNumber(r.amount),
    currency: r.currency,
    reason_code: r.reasonCode,
    description: r.description,
    external_reference: r.externalReference,
    beneficiary: r.beneficiary,
  };
}

/** The full object of the list (and of webhooks), in the field order of Lean's sample. */
export function refundObject(r: RefundView): Record<string, unknown> {
  return {
    refund_id: r.refundId,
    deposit_amount: amountNumber(r.amount),
    deposit_currency: r.currency,
    payment_id: r.paymentId,
    status: r.status,
    amount: amountNumber(r.amount),
    currency: r.currency,
    reason_code: r.reasonCode,
    description: r.description,
    external_reference: r.externalReference,
    beneficiary: r.beneficiary,
    created_at: r.createdAt,
    created_by: r.createdBy,
    actioned_by: r.actionedBy,
    refund_intent_id: null,
  };
}

/** Serialises with LosslessNumber amounts written digit for digit. */
export function leanJson(value: unknown): string {
  return stringify(value)!;
}

// ---------------------------------------------------------------------------------------
// Webhooks (providers.md §3.6)

/** `lean-signature` header value: `sha512=<hex HMAC-SHA512(rawBody, secret)>`. */
export function leanWebhookSignature(secret: string, rawBody: string | Buffer): string {
  return `sha512=${createHmac('sha512', secret).update(rawBody).digest('hex')}`;
}

export function refundEventType(prefix: string, status: string): string {
  return `${prefix}.${status.toLowerCase()}`;
}

export function buildRefundWebhookBody(opts: {
  type: string;
  refund: RefundView;
  eventId: string;
  now: Date;
}): string {
  return leanJson({
    type: opts.type,
    payload: refundObject(opts.refund),
    message: opts.refund.status === 'CREATED' ? 'A refund object has been created.' : 'A refund object has been updated.',
    timestamp: opts.now.toISOString(),
    event_id: opts.eventId,
  });
}

/**
 * Lean retries at 1, 2, 5, 10, 60 and 180 minutes; the sandbox keeps those proportions at
 * 1/300 of the time (0.2 s ... 36 s), so 7 attempts in all.
 */
export const WEBHOOK_RETRY_DELAYS_MS = [200, 400, 1_000, 2_000, 12_000, 36_000] as const;

export function webhookRetryDelay(attemptsMade: number): number | undefined {
  return WEBHOOK_RETRY_DELAYS_MS[attemptsMade - 1];
}

/** Lean counts a delivery only on HTTP 200 (not any 2xx) within the time limit. */
export function isWebhookAcknowledged(status: number): boolean {
  return status === 200;
}

// ---------------------------------------------------------------------------------------
// Seeded payments

export const LEAN_CURRENCIES = ['AED', 'SAR'] as const;

/** ISO 13616 check digits for a country code and BBAN. */
export function ibanWithCheckDigits(country: string, bban: string): string {
  const digits = `${bban}${country}00`.replace(/[A-Z]/g, (c) => String(c.charCodeAt(0) - 55));
  let rest = 0;
  for (const ch of digits) rest = (rest * 10 + Number(ch)) % 97;
  return `${country}${String(98 - rest).padStart(2, '0')}${bban}`;
}

export function isValidIban(iban: string): boolean {
  const rearranged = `${iban.slice(4)}${iban.slice(0, 4)}`.replace(/[A-Z]/g, (c) => String(c.charCodeAt(0) - 55));
  let rest = 0;
  for (const ch of rearranged) rest = (rest * 10 + Number(ch)) % 97;
  return rest === 1;
}
