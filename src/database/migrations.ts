import { InitialSchema1763870000000 } from '../../migrations/1763870000000-initial-schema.js';
import { Operations1763880000000 } from '../../migrations/1763880000000-operations.js';
import { Webhooks1763890000000 } from '../../migrations/1763890000000-webhooks.js';

/** Every migration, oldest first. The schema comes only from these (never synchronize). */
export const MIGRATIONS = [InitialSchema1763870000000, Operations1763880000000, Webhooks1763890000000];
