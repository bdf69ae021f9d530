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
