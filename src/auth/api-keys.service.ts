import { Injectable } from '@nestjs/common';
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { AppConfig } from '../config/config.js';
import { Database } from '../database/database.js';
import { Problem } from '../common/problem.js';
import { ApiKeyCache } from './api-key-cache.js';
import { RateLimiter } from './rate-limit.js';
import { ApiRole, AuthContext } from './auth-context.js';

/** The admin key used when SANDBOX=true and ADMIN_API_KEY is unset (local development only). */
export const SANDBOX_ADMIN_KEY = 'sandbox_admin_key_local_only';

export interface ApiKeyView {
  id: string;
  role: ApiRole;
  merchantId: string | null;
  name: string;
  createdAt: string;
  revokedAt: string | null;
}

interface ApiKeyRow {
  id: string;
  role: ApiRole;
  merchant_id: string | null;
  name: string;
  created_at: Date;
  revoked_at: Date | null;
}

function sha256(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/**
 * API keys: 256 random bits, shown once, stored as SHA-256 (a slow hash buys nothing for
 * keys of full entropy and would cost every request). Lookup is by hash, so no stored
 * secret is ever compared with the presented one character by character.
 */
@Injectable()
export class ApiKeysService {
  private readonly adminHash: Buffer;

  constructor(
    private readonly db: Database,
    cfg: AppConfig,
    private readonly cache: ApiKeyCache,
    private readonly limiter: RateLimiter,
  ) {
    this.adminHash = sha256(cfg.adminApiKey ?? SANDBOX_ADMIN_KEY);
  }

  /**
   * The key's identity, or null for an unknown or revoked key, from the database. With
   * `remembered`, a key this process authenticated within API_KEY_CACHE_MS comes from memory
   * (ApiKeyCache) marked `fromCache`: only ApiKeyGuard asks for that, since it confirms such
   * a key with the rate limiter's revocation check (or asks again without `remembered`).
   */
  async authenticate(presented: string, remembered = false): Promise<(AuthContext & { fromCache?: boolean }) | null> {
    const hash = sha256(presented);
    if (timingSafeEqual(hash, this.adminHash)) return { keyId: 'bootstrap-admin', role: 'admin', merchantId: null };
    const cacheKey = hash.toString('hex');
    const cached = remembered ? this.cache.get(cacheKey) : undefined;
    if (cached) return { ...cached, fromCache: true };
    const row = await this.db.one<ApiKeyRow>(
      `SELECT id, role, merchant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL`,
      [hash],
    );
    if (!row) return null;
    const auth: AuthContext = { keyId: row.id, role: row.role, merchantId: row.merchant_id };
    this.cache.put(cacheKey, auth);
    return auth;
  }

  async create(input: { role: ApiRole; merchantId?: string; name: string }, actor: AuthContext) {
    if (input.role === 'merchant' && !input.merchantId) {
      throw Problem.validation([{ field: 'merchantId', message: 'merchantId is required for role merchant' }]);
    }
    if (input.role !== 'merchant' && input.merchantId !== undefined) {
      throw Problem.validation([{ field: 'merchantId', message: 'merchantId is only allowed for role merchant' }]);
    }
    const id = randomUUID();
    const key = `rk_${input.role}_${randomBytes(32).toString('base64url')}`;
    const row = await this.db.transaction(async (tx) => {
      if (input.merchantId) {
        await tx.query(`INSERT INTO merchants (id) VALUES ($1) ON CONFLICT (id) DO NOTHING`, [input.merchantId]);
      }
      const [inserted] = await tx.query<ApiKeyRow>(
        `INSERT INTO api_keys (id, key_hash, key_prefix, role, merchant_id, name, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id, role, merchant_id, name, created_at, revoked_at`,
        [id, sha256(key), key.slice(0, 16), input.role, input.merchantId ?? null, input.name, actor.keyId],
      );
      await tx.query(`INSERT INTO audit_events (actor, action, subject, detail) VALUES ($1, 'api_key.create', $2, $3)`, [
        `api_key:${actor.keyId}`,
        id,
        { role: input.role, merchantId: input.merchantId ?? null, name: input.name },
      ]);
      return inserted;
    });
    return { ...toView(row), key };
  }

  async revoke(id: string, actor: AuthContext): Promise<void> {
    // First the marker every API process's next request checks (ApiKeyCache), then the record.
    const [known] = await this.db.query<{ id: string }>(`SELECT id FROM api_keys WHERE id = $1 AND revoked_at IS NULL`, [id]);
    if (!known) throw new Problem('not_found', 'No such API key.');
    await this.limiter.markRevoked(id);
    await this.db.transaction(async (tx) => {
      const rows = await tx.query(`UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id`, [id]);
      if (rows.length === 0) throw new Problem('not_found', 'No such API key.');
      await tx.query(`INSERT INTO audit_events (actor, action, subject) VALUES ($1, 'api_key.revoke', $2)`, [`api_key:${actor.keyId}`, id]);
    });
    this.cache.forget(id);
  }
}

function toView(row: ApiKeyRow): ApiKeyView {
  return {
    id: row.id,
    role: row.role,
    merchantId: row.merchant_id,
    name: row.name,
    createdAt: row.created_at.toISOString(),
    revokedAt: row.revoked_at ? row.revoked_at.toISOString() : null,
  };
}
