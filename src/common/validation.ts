import { ArgumentMetadata, Injectable, ValidationError, ValidationPipe } from '@nestjs/common';
import { FieldError, Problem } from './problem.js';

function flatten(errors: ValidationError[], parent = ''): FieldError[] {
  return errors.flatMap((e) => {
    const field = parent ? `${parent}.${e.property}` : e.property;
    const own = Object.values(e.constraints ?? {}).map((message) => ({
      field,
      message: message.startsWith('property ') && message.endsWith(' should not exist') ? `${field} is not an allowed field` : message,
    }));
    return [...own, ...flatten(e.children ?? [], field)];
  });
}

/**
 * class-validator with the contract's error shape: unknown fields are rejected, types are
 * never coerced in bodies, and every failure is a 400 validation_failed listing the fields.
 */
@Injectable()
export class StrictValidationPipe extends ValidationPipe {
  constructor() {
    super({
      whitelist: true,
      forbidNonWhitelisted: true,
      transform: true,
      transformOptions: { enableImplicitConversion: false },
      validationError: { target: false, value: false },
      exceptionFactory: (errors) => Problem.validation(flatten(errors)),
    });
  }

  override async transform(value: unknown, metadata: ArgumentMetadata): Promise<unknown> {
    // Before class-transformer sees it: a `__proto__` key would replace the DTO's prototype
    // (and with it every validation rule), and deep nesting overflows its recursion (a 500).
    const unsafe = findUnsafe(value, metadata.type === 'body' ? '' : (metadata.data ?? metadata.type));
    if (unsafe) throw Problem.validation([unsafe]);
    const nul = findNul(value, metadata.type === 'body' ? '' : (metadata.data ?? metadata.type));
    if (nul !== undefined) throw Problem.validation([{ field: nul || 'body', message: 'must not contain NUL characters' }]);
    if (metadata.type === 'body' && metadata.metatype && metadata.metatype !== Object) {
      // No body at all is an empty object (e.g. POST .../approve without a comment).
      if (value === undefined) value = {};
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        throw Problem.validation([{ field: 'body', message: 'The body must be a JSON object.' }]);
      }
    }
    return super.transform(value, metadata);
  }
}

/** Path of the first string holding a NUL character (Postgres text cannot store one). */
function findNul(value: unknown, path: string, depth = 0): string | undefined {
  if (typeof value === 'string') return value.includes('\u0000') ? path : undefined;
  if (depth > 32 || !value || typeof value !== 'object') return undefined;
  for (const [k, v] of Object.entries(value)) {
    if (k.includes('\u0000')) return path ? `${path}.${k}` : k;
    const hit = findNul(v, path ? `${path}.${k}` : k, depth + 1);
    if (hit !== undefined) return hit;
  }
  return undefined;
}

/** Deeper than any request of the API (a refund body is 3 levels deep). */
export const MAX_INPUT_DEPTH = 16;
/**
 * Names of Object.prototype members (`__proto__`, `constructor`, `toString`, ...) and
 * `prototype`: class-transformer assigns `__proto__` as the prototype (dropping every
 * validation rule) and silently skips the others (a metadata key "toString" vanished from
 * the stored refund), so they are refused rather than half-handled.
 */
const FORBIDDEN_KEYS = new Set([...Object.getOwnPropertyNames(Object.prototype), 'prototype']);
/** A JSON `\ud800` escape yields a string no database column can hold as sent (stored as U+FFFD). */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/**
 * The first reserved key, too-deep value or string with a lone UTF-16 surrogate in a parsed
 * body or query (iterative: no recursion to overflow).
 */
export function findUnsafe(value: unknown, root: string): FieldError | undefined {
  const stack: Array<{ v: unknown; path: string; depth: number }> = [{ v: value, path: root, depth: 0 }];
  while (stack.length) {
    const { v, path, depth } = stack.pop()!;
    if (typeof v === 'string' && LONE_SURROGATE.test(v)) return { field: path || 'body', message: 'must be valid Unicode text' };
    if (!v || typeof v !== 'object') continue;
    if (depth >= MAX_INPUT_DEPTH) return { field: path || 'body', message: `must not be nested more than ${MAX_INPUT_DEPTH} levels deep` };
    for (const k of Object.keys(v)) {
      const field = path ? `${path}.${k}` : k;
      if (FORBIDDEN_KEYS.has(k)) return { field, message: `${k} is a reserved name and not an allowed field` };
      if (LONE_SURROGATE.test(k)) return { field: path || 'body', message: 'keys must be valid Unicode text' };
      stack.push({ v: (v as Record<string, unknown>)[k], path: field, depth: depth + 1 });
    }
  }
  return undefined;
}
