import { generateKeyPair, randomBytes, randomInt } from 'node:crypto';
import { promisify } from 'node:util';
import { Injectable } from '@nestjs/common';
import { ed25519PublicHex } from '../providers/cobo/cobo.signing.js';
import { SandboxStore, onceUntilFailure } from './sandbox-store.js';

const generateKeyPairAsync = promisify(generateKeyPair);

/** A fresh 2048-bit RSA key pair as PEM (SPKI public, PKCS#8 private). */
export function generateRsaKeyPairPem(): Promise<{ privateKey: string; publicKey: string }> {
  return generateKeyPairAsync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
}

/** Everything the Binance Pay emulator holds for its single sandbox merchant. */
export interface BinancePaySandboxMerchant {
  apiKey: string;
  secretKey: string;
  /** Binance's merchantId (a long on the wire). */
  merchantId: number;
  /** RSA key pair that signs webhooks; the public half is what /certificates serves. */
  webhookPrivateKeyPem: string;
  webhookPublicKeyPem: string;
}

async function generateBinancePayMerchant(): Promise<BinancePaySandboxMerchant> {
  const { privateKey, publicKey } = await generateRsaKeyPairPem();
  return {
    apiKey: randomBytes(32).toString('hex'),
    secretKey: randomBytes(32).toString('hex'),
    merchantId: randomInt(100_000_000, 999_999_999),
    webhookPrivateKeyPem: privateKey,
    webhookPublicKeyPem: publicKey,
  };
}

/** The Cobo emulator's two Ed25519 key pairs (hex seeds and hex public keys). */
export interface CoboSandboxKeys {
  /** Seed the service signs API requests with (its COBO_API_PRIVATE_KEY). */
  apiPrivateKey: string;
  /** Its public half: the one API key (Biz-Api-Key) the emulator knows. */
  apiPublicKey: string;
  /** Seed the emulator signs responses and webhooks with (Cobo's own key). */
  emulatorSeed: string;
  /** Its public half: what the service verifies responses and webhooks with (its COBO_PUBLIC_KEY). */
  coboPublicKey: string;
}

/** Only the seeds are stored; the public keys are derived from them. */
interface StoredCoboSeeds {
  apiPrivateKey: string;
  emulatorSeed: string;
}

async function generateCoboSeeds(): Promise<StoredCoboSeeds> {
  return { apiPrivateKey: randomBytes(32).toString('hex'), emulatorSeed: randomBytes(32).toString('hex') };
}

/**
 * Credentials of the built-in emulators, generated once per database and shared by every
 * process (so an API process and a worker agree), cached in memory after the first read.
 */
@Injectable()
export class SandboxCredentials {
  private readonly binance = onceUntilFailure(() => this.store.credentials('binance_pay', generateBinancePayMerchant));
  private readonly coboKeys = onceUntilFailure(async (): Promise<CoboSandboxKeys> => {
    const seeds = await this.store.credentials('cobo', generateCoboSeeds);
    return {
      apiPrivateKey: seeds.apiPrivateKey,
      apiPublicKey: ed25519PublicHex(seeds.apiPrivateKey),
      emulatorSeed: seeds.emulatorSeed,
      coboPublicKey: ed25519PublicHex(seeds.emulatorSeed),
    };
  });

  constructor(private readonly store: SandboxStore) {}

  /** What a Binance Pay adapter needs to call the emulator. */
  async binancePay(): Promise<{ apiKey: string; secretKey: string }> {
    const merchant = await this.binancePayMerchant();
    return { apiKey: merchant.apiKey, secretKey: merchant.secretKey };
  }

  /** The full sandbox merchant, including the webhook signing keys (emulator side only). */
  binancePayMerchant(): Promise<BinancePaySandboxMerchant> {
    return this.binance();
  }

  /** What a Cobo adapter needs to call the emulator and verify its answers and webhooks. */
  async cobo(): Promise<{ apiPrivateKey: string; coboPublicKey: string }> {
    const keys = await this.coboEmulator();
    return { apiPrivateKey: keys.apiPrivateKey, coboPublicKey: keys.coboPublicKey };
  }

  /** Both key pairs, including the emulator's signing seed (emulator side only). */
  coboEmulator(): Promise<CoboSandboxKeys> {
    return this.coboKeys();
  }
}
