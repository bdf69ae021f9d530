/**
 * Generic validation of an emulator's fault settings (`PUT /sandbox/{provider}/faults`):
 * each emulator declares its settings as rules and defaults, this checks a partial update
 * against them and overlays stored settings on the defaults. (The Binance Pay emulator has
 * an older copy of the same logic in binance-pay.faults.ts.)
 */

export type FaultRule =
  | { kind: 'rate' }
  /** A number strictly between 0 and 1. */
  | { kind: 'ratio' }
  | { kind: 'ms'; max: number }
  | { kind: 'boolean' }
  | { kind: 'enum'; values: readonly string[] }
  /** An http(s) URL, or null to unset it. */
  | { kind: 'url' };

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

/** Validates a partial update; throws FaultValidationError naming the offending key. */
export function parseFaultPatch<T extends object>(rules: Record<keyof T, FaultRule>, body: unknown): Partial<T> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new FaultValidationError('the body must be a JSON object');
  }
  const patch: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) {
    const rule = (rules as Record<string, FaultRule | undefined>)[key];
    if (!rule) throw new FaultValidationError(`unknown fault setting "${key}"`);
    switch (rule.kind) {
      case 'rate':
        if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1) {
          throw new FaultValidationError(`${key} must be a number between 0 and 1`);
        }
        break;
      case 'ratio':
        if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value >= 1) {
          throw new FaultValidationError(`${key} must be a number strictly between 0 and 1`);
        }
        break;
      case 'ms':
        if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > rule.max) {
          throw new FaultValidationError(`${key} must be a whole number of milliseconds between 0 and ${rule.max}`);
        }
        break;
      case 'boolean':
        if (typeof value !== 'boolean') throw new FaultValidationError(`${key} must be true or false`);
        break;
      case 'enum':
        if (typeof value !== 'string' || !rule.values.includes(value)) {
          throw new FaultValidationError(`${key} must be one of ${rule.values.join(', ')}`);
        }
        break;
      case 'url':
        if (value !== null && (typeof value !== 'string' || !isHttpUrl(value))) {
          throw new FaultValidationError(`${key} must be an http or https URL, or null`);
        }
        break;
    }
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

/** Math.random is fine here: fault rates decide test behaviour, never amounts or secrets. */
export function chance(rate: number): boolean {
  return rate > 0 && Math.random() < rate;
}
