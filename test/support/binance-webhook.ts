import { randomBytes } from 'node:crypto';
import { binanceCertSerial, signBinanceWebhook } from '../../src/providers/binance-pay/binance-pay.signing.js';
import { SandboxCredentials } from '../../src/sandbox/sandbox-credentials.js';
import type { TestService } from './service.js';

/**
 * A refund notification as Binance sends it, signed with the sandbox's webhook key: body and
 * headers, for a POST to /webhooks/binance-pay. It reports a refund of 1.00000000.
 */
export async function signedBinanceWebhook(svc: TestService, requestId: string, prepayId: string, bizStatus: string, timestamp = String(Date.now())) {
  const merchant = await svc.app.get(SandboxCredentials).binancePayMerchant();
  const bizId = `1${randomBytes(8).readBigUInt64BE().toString().padStart(18, '0').slice(0, 18)}`;
  const inner = JSON.stringify({
    merchantTradeNo: 'T1',
    totalFee: 0.01,
    currency: 'USDT',
    refundInfo: { refundRequestId: requestId, prepayId, orderAmount: '10.00000000', refundedAmount: '1.00000000', refundAmount: '1.00000000', remainingAttempts: 9, payerOpenId: 'p', duplicateRequest: 'N' },
  });
  // bizId as a bare 19-digit number, as Binance sends it.
  const body = `{"bizType":"PAY_REFUND","bizId":${bizId},"bizIdStr":"${bizId}","bizStatus":"${bizStatus}","data":${JSON.stringify(inner)}}`;
  const nonce = randomBytes(16).toString('hex');
  return {
    body,
    headers: {
      'Content-Type': 'application/json',
      'BinancePay-Certificate-SN': binanceCertSerial(merchant.webhookPublicKeyPem),
      'BinancePay-Nonce': nonce,
      'BinancePay-Timestamp': timestamp,
      'BinancePay-Signature': signBinanceWebhook(merchant.webhookPrivateKeyPem, timestamp, nonce, body),
    },
  };
}
