import { describe, expect, it } from 'vitest';
import { ConfigError } from '../config/config.js';
import { retryDelayMs, WebhookSettings } from './webhook-settings.js';

describe('merchant webhook settings and retry schedule', () => {
  it('defaults to a 10 s timeout and a schedule spanning more than a day even with the shortest jitter', () => {
    const s = WebhookSettings.fromEnv({});
    expect(s.timeoutMs).toBe(10_000);
    let shortest = 0;
    let longest = 0;
    for (let n = 1; n < s.maxAttempts; n++) {
      shortest += retryDelayMs(n, s.maxAttempts, s, () => 0)!;
      longest += retryDelayMs(n, s.maxAttempts, s, () => 0.999999)!;
    }
    expect(shortest).toBeGreaterThan(24 * 3_600_000);
    expect(longest).toBeLessThan(48 * 3_600_000);
    expect(retryDelayMs(s.maxAttempts, s.maxAttempts, s)).toBeUndefined();
  });

  it('doubles from the base, caps each delay and jitters by ±20%', () => {
    const s = { retryBaseMs: 200, retryMaxMs: 1_000 };
    expect(retryDelayMs(1, 10, s, () => 0.5)).toBe(200);
    expect(retryDelayMs(2, 10, s, () => 0.5)).toBe(400);
    expect(retryDelayMs(3, 10, s, () => 0.5)).toBe(800);
    expect(retryDelayMs(4, 10, s, () => 0.5)).toBe(1_000);
    expect(retryDelayMs(1, 10, s, () => 0)).toBe(160);
    expect(retryDelayMs(1, 10, s, () => 0.999999)).toBe(240);
    expect(retryDelayMs(1, 1, s)).toBeUndefined();
  });

  it('reads overrides and stops on bad values, naming the variable', () => {
    const s = WebhookSettings.fromEnv({ WEBHOOK_RETRY_BASE_MS: '200', WEBHOOK_TIMEOUT_MS: '2000', WEBHOOK_ALLOW_PRIVATE_TARGETS: 'false' });
    expect(s).toMatchObject({ retryBaseMs: 200, timeoutMs: 2_000, allowPrivateTargets: false, leaseMs: 7_000 });
    expect(WebhookSettings.fromEnv({ NODE_ENV: 'production' }).allowPrivateTargets).toBe(false);
    expect(WebhookSettings.fromEnv({ NODE_ENV: 'test' }).allowPrivateTargets).toBe(true);
    expect(() => WebhookSettings.fromEnv({ WEBHOOK_TIMEOUT_MS: 'ten' })).toThrow(/WEBHOOK_TIMEOUT_MS/);
    expect(() => WebhookSettings.fromEnv({ WEBHOOK_MAX_ATTEMPTS: '0' })).toThrow(ConfigError);
    expect(() => WebhookSettings.fromEnv({ WEBHOOK_RETRY_BASE_MS: '5000', WEBHOOK_RETRY_MAX_MS: '1000' })).toThrow(/WEBHOOK_RETRY_MAX_MS/);
  });
});
