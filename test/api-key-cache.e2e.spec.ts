import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPeer, startService, TestService } from './support/service.js';

// API processes remember authenticated keys for API_KEY_CACHE_MS (ApiKeyCache), and a
// revocation through the API must still stop the key at once in every process: the
// rate limiter's script, run on every request, reports the revocation marker.

let svc: TestService;
let peer: Awaited<ReturnType<typeof startPeer>>;

beforeAll(async () => {
  svc = await startService('keycache', { API_KEY_CACHE_MS: '60000' });
  peer = await startPeer(svc, { API_KEY_CACHE_MS: '60000' });
});

afterAll(async () => {
  await peer?.stop();
  await svc?.stop();
});

async function newKey(): Promise<{ id: string; key: string }> {
  const res = await svc
    .http()
    .post('/v1/api-keys')
    .set('Authorization', `Bearer ${svc.adminKey}`)
    .send({ role: 'ops', name: 'cache test' })
    .expect(201);
  return { id: res.body.id, key: res.body.key };
}

const list = (http: () => ReturnType<TestService['http']>, key: string) => http().get('/v1/refunds').set('Authorization', `Bearer ${key}`);

describe('remembered API keys', () => {
  it('are remembered: a key revoked behind the API’s back keeps working from memory (why revocations go through the API)', async () => {
    const { id, key } = await newKey();
    await list(peer.http, key).expect(200);
    await svc.db.query(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, [id]);
    // The database says revoked, the peer still remembers the key: the cache is really in use.
    await list(peer.http, key).expect(200);
    await svc.db.query(`UPDATE api_keys SET revoked_at = NULL WHERE id = $1`, [id]);
  });

  it('stop at once in every process when revoked through the API', async () => {
    for (let i = 0; i < 8; i++) {
      const { id, key } = await newKey();
      // Remembered by both processes.
      for (let n = 0; n < 3; n++) {
        await list(peer.http, key).expect(200);
        await list(svc.http, key).expect(200);
      }
      // Revoked through one process (alternating); the very next request to either is refused.
      const revoker = i % 2 === 0 ? svc.http : peer.http;
      await revoker().delete(`/v1/api-keys/${id}`).set('Authorization', `Bearer ${svc.adminKey}`).expect(204);
      const [a, b] = await Promise.all([list(peer.http, key), list(svc.http, key)]);
      expect([a.status, b.status]).toEqual([401, 401]);
      expect(a.body.code).toBe('unauthorized');
    }
  });

  it('does not let a revoked key spend or reset the rate limit', async () => {
    const { id, key } = await newKey();
    await list(peer.http, key).expect(200);
    await svc.http().delete(`/v1/api-keys/${id}`).set('Authorization', `Bearer ${svc.adminKey}`).expect(204);
    const res = await list(peer.http, key);
    expect(res.status).toBe(401);
    expect(res.headers['ratelimit-remaining']).toBeUndefined();
  });
});
