/**
 * Generic validation of an emulator's fault settings (`PUT /sandbox/{provider}/faults`):
 * each emulator declares its settings as rules and defaults, this checks a partial update
 * against them and overlays stored settings on the defaults.
 */

export type FaultRule =
  | { kind: 'rate' }
  /** A number strictly between 0 and 1. */
  | { kind: 'ratio' }
  /** A whole number of milliseconds from 0 to max. */
  | { kind: 'ms'; max: number }
  /** A whole number of `unit` from min to max. */
  | { kind: 'int'; min: number; max: number; unit: string }
  | { kind: 'boolean' }
  | { kind: 'enum'; values: readonly string[] }
  /** An http(s) URL, or null to unset it. */
  | { kind: 'url' }
  /** An emulator's own check: what is wrong with the value ("must be ..."), or undefined. */
  | { kind: 'check'; check: (value: unknown) => string | undefined };

export class FaultValidationError extends Error {}

function isHttpUrl(value: string): boolean {
  if (!/^https?:\/\//i.test(value) || value.length > 2048) return false;
  try {
    new URL(value);
    return true;
  } catch {
    return false;
  }
}

function isWholeNumber(value: unknown, min: number, max: number): boolean {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;
}

/** What is wrong with `value` under `rule`, completing "<key> ...", or undefined. */
function problem(rule: FaultRule, value: unknown): string | undefined {
  switch (rule.kind) {
    case 'rate':
      return typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1
        ? 'must be a number between 0 and 1'
        : undefined;
    case 'ratio':
      return typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value >= 1
        ? 'must be a number strictly between 0 and 1'
        : undefined;
    case 'ms':
      return isWholeNumber(value, 0, rule.max) ? undefined : `must be a whole number of milliseconds between 0 and ${rule.max}`;
    case 'int':
      return isWholeNumber(value, rule.min, rule.max)
        ? undefined
        : `must be a whole number of ${rule.unit} between ${rule.min} and ${rule.max}`;
    case 'boolean':
      return typeof value !== 'boolean' ? 'must be true or false' : undefined;
    case 'enum':
      return typeof value !== 'string' || !rule.values.includes(value) ? `must be one of ${rule.values.join(', ')}` : undefined;
    case 'url':
      return value !== null && (typeof value !== 'string' || !isHttpUrl(value))
        ? 'must be an http or https URL, or null'
        : undefined;
    case 'check':
      return rule.check(value);
  }
}

/** Validates a partial update; throws FaultValidationError naming the offending key. */
export function parseFaultPatch<T extends object>(rules: Record<keyof T, FaultRule>, body: unknown): Partial<T> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new FaultValidationError('the body must be a JSON object');
  }
  const patch: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) {
    const rule = (rules as Record<string, FaultRule | undefined>)[key];
    if (!rule) throw new FaultValidationError(`unknown fault setting "${key}"`);
    const wrong = problem(rule, value);
    if (wrong !== undefined) throw new FaultValidationError(`${key} ${wrong}`);
    patch[key] = value;
  }
  return patch as Partial<T>;
}

/** Defaults overlaid with the stored settings; stored keys no longer known are ignored. */
export function resolveFaults<T extends object>(
  defaults: Readonly<T>,
  rules: Record<keyof T, FaultRule>,
  stored: Record<string, unknown> | undefined,
): T {
  const out: Record<string, unknown> = { ...defaults };
  for (const key of Object.keys(rules)) {
    if (stored && stored[key] !== undefined) out[key] = stored[key];
  }
  return out as T;
}

/**
 * Delay before a webhook's first delivery attempt: the fixed `webhookDelayMs` plus a random
 * 0..`webhookJitterMs`, drawn per webhook (per copy of a duplicate), so later statuses can
 * overtake earlier ones.
 */
export function webhookDelay(faults: { webhookDelayMs: number; webhookJitterMs: number }): number {
  return faults.webhookDelayMs + Math.floor(Math.random() * (faults.webhookJitterMs + 1));
}

/** Math.random is fine here: fault rates decide test behaviour, never amounts or secrets. */
export function chance(rate: number): boolean {
  return rate > 0 && Math.random() < rate;
}
