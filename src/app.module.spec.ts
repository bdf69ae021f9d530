import { describe, expect, it } from 'vitest';
import { redactUrl } from './app.module.js';

describe('redactUrl (request URLs in logs)', () => {
  it('redacts the values of secret-looking query parameters and keeps the rest', () => {
    expect(redactUrl('/v1/refunds?api_key=rk_live_abc&limit=5')).toBe('/v1/refunds?api_key=[redacted]&limit=5');
    expect(redactUrl('/v1/refunds?access_token=x&Token=y&status=failed')).toBe('/v1/refunds?access_token=[redacted]&Token=[redacted]&status=failed');
    expect(redactUrl('/v1/refunds?api%5Fkey=x')).toBe('/v1/refunds?api%5Fkey=[redacted]');
    expect(redactUrl('/v1/refunds?password')).toBe('/v1/refunds?password');
    expect(redactUrl('/v1/refunds?%E0%A4%A=x')).toBe('/v1/refunds?%E0%A4%A=x');
    expect(redactUrl('/v1/refunds')).toBe('/v1/refunds');
  });
});
