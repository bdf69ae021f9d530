import { KeyObject, createPrivateKey, createPublicKey, randomBytes, randomUUID } from 'node:crypto';
import { Injectable } from '@nestjs/common';
import { generateRsaKeyPairPem } from '../sandbox-credentials.js';
import { onceUntilFailure } from '../sandbox-store.js';
import { LeanSandboxStore } from './lean.store.js';

/** Everything the Lean emulator holds for its single sandbox application. */
export interface LeanSandboxApplication {
  /** Lean's application id, sent as client_id. */
  clientId: string;
  clientSecret: string;
  /** Secret of the `lean-signature` HMAC on webhooks (dashboard, Integration tab). */
  webhookSecret: string;
  /** RS256 key pair signing access tokens; `kid` goes in the JWT header. */
  kid: string;
  privateKeyPem: string;
  publicKeyPem: string;
}

export interface LeanSigningKeys {
  kid: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

async function generateApplication(): Promise<LeanSandboxApplication> {
  const { privateKey, publicKey } = await generateRsaKeyPairPem();
  return {
    clientId: randomUUID(),
    clientSecret: randomBytes(32).toString('hex'),
    webhookSecret: randomBytes(32).toString('hex'),
    kid: randomUUID(),
    privateKeyPem: privateKey,
    publicKeyPem: publicKey,
  };
}

/**
 * Credentials of the Lean emulator, generated once per database and shared by every
 * process (so an API process and a worker agree), cached in memory after the first read.
 */
@Injectable()
export class LeanSandboxCredentials {
  private readonly application = onceUntilFailure(() => this.store.credentials(generateApplication));
  private readonly keys = onceUntilFailure(async (): Promise<LeanSigningKeys> => {
    const app = await this.leanApplication();
    return { kid: app.kid, privateKey: createPrivateKey(app.privateKeyPem), publicKey: createPublicKey(app.publicKeyPem) };
  });

  constructor(private readonly store: LeanSandboxStore) {}

  /** What a Lean adapter needs: LEAN_CLIENT_ID, LEAN_CLIENT_SECRET, LEAN_WEBHOOK_SECRET. */
  async lean(): Promise<{ clientId: string; clientSecret: string; webhookSecret: string }> {
    const app = await this.leanApplication();
    return { clientId: app.clientId, clientSecret: app.clientSecret, webhookSecret: app.webhookSecret };
  }

  /** The full application, including the token signing keys (emulator side only). */
  leanApplication(): Promise<LeanSandboxApplication> {
    return this.application();
  }

  /** The token signing keys as KeyObjects, parsed once. */
  signingKeys(): Promise<LeanSigningKeys> {
    return this.keys();
  }
}
