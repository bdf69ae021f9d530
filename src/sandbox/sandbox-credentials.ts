import { generateKeyPair, randomBytes, randomInt } from 'node:crypto';
import { promisify } from 'node:util';
import { Injectable } from '@nestjs/common';
import { SandboxStore } from './sandbox-store.js';

const generateKeyPairAsync = promisify(generateKeyPair);

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
  const { privateKey, publicKey } = await generateKeyPairAsync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return {
    apiKey: randomBytes(32).toString('hex'),
    secretKey: randomBytes(32).toString('hex'),
    merchantId: randomInt(100_000_000, 999_999_999),
    webhookPrivateKeyPem: privateKey,
    webhookPublicKeyPem: publicKey,
  };
}

/**
 * Credentials of the built-in emulators, generated once per database and shared by every
 * process (so an API process and a worker agree), cached in memory after the first read.
 */
@Injectable()
export class SandboxCredentials {
  private binance?: Promise<BinancePaySandboxMerchant>;

  constructor(private readonly store: SandboxStore) {}

  /** What a Binance Pay adapter needs to call the emulator. */
  async binancePay(): Promise<{ apiKey: string; secretKey: string }> {
    const merchant = await this.binancePayMerchant();
    return { apiKey: merchant.apiKey, secretKey: merchant.secretKey };
  }

  /** The full sandbox merchant, including the webhook signing keys (emulator side only). */
  binancePayMerchant(): Promise<BinancePaySandboxMerchant> {
    this.binance ??= this.store.credentials('binance_pay', generateBinancePayMerchant).catch((err: unknown) => {
      this.binance = undefined;
      throw err;
    });
    return this.binance;
  }
}
