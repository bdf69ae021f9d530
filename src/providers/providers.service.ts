import { Inject, Injectable } from '@nestjs/common';
import { Problem } from '../common/problem.js';
import { ProviderName, REFUND_PROVIDERS, RefundProvider } from './provider.js';

/** Looks adapters up by name; the core never imports a specific adapter. */
@Injectable()
export class ProvidersService {
  private readonly byName = new Map<ProviderName, RefundProvider>();

  constructor(@Inject(REFUND_PROVIDERS) providers: RefundProvider[]) {
    for (const p of providers) {
      if (this.byName.has(p.name)) throw new Error(`two adapters for provider ${p.name}`);
      this.byName.set(p.name, p);
    }
  }

  /** The adapter, or 422 provider_not_configured when it has no credentials. */
  get(name: ProviderName): RefundProvider {
    const provider = this.byName.get(name);
    if (!provider || !provider.isEnabled()) {
      throw new Problem('provider_not_configured', `Provider ${name} is not configured on this service.`);
    }
    return provider;
  }

  /** Every adapter, enabled or not. */
  all(): RefundProvider[] {
    return [...this.byName.values()];
  }

  /** The adapter even when disabled (workers finishing refunds accepted earlier). */
  find(name: ProviderName): RefundProvider | undefined {
    return this.byName.get(name);
  }
}
