import { InitialSchema1763870000000 } from '../../migrations/1763870000000-initial-schema.js';
import { Operations1763880000000 } from '../../migrations/1763880000000-operations.js';
import { Webhooks1763890000000 } from '../../migrations/1763890000000-webhooks.js';
import { FinanceViews1763900000000 } from '../../migrations/1763900000000-finance-views.js';
import { Reconciliations1763910000000 } from '../../migrations/1763910000000-reconciliations.js';
import { RefundsFillfactor1763920000000 } from '../../migrations/1763920000000-refunds-fillfactor.js';
import { PaymentGuardVersion1763930000000 } from '../../migrations/1763930000000-payment-guard-version.js';
import { RefundEventsRetryIndex1763940000000 } from '../../migrations/1763940000000-refund-events-retry-index.js';

/** Every migration, oldest first. The schema comes only from these (never synchronize). */
export const MIGRATIONS = [InitialSchema1763870000000, Operations1763880000000, Webhooks1763890000000, FinanceViews1763900000000, Reconciliations1763910000000, RefundsFillfactor1763920000000, PaymentGuardVersion1763930000000, RefundEventsRetryIndex1763940000000];
