-- One refund's row writes as the worker makes them in the end-to-end benchmark (finding 38:
-- an insert and ~5.6 updates, ~40 % of them HOT): insert queued; lease (HOT); to processing;
-- provider id and next check (lease released); lease again (HOT); to succeeded. Each
-- statement commits on its own. Used by refund-indexes.sh.
\set n random(1, 9000000000000000)
\set p random(1, 1000)
INSERT INTO refunds (id, merchant_id, provider, payment_id, amount, currency, status, reason, idempotency_key, request_hash, next_check_at)
  VALUES (md5(:n::text)::uuid, 'm1', 'binance_pay', 'p' || :p, 1, 'USDT', 'queued', 'other', 'k' || :n, 'h', now());
UPDATE refunds SET lease_owner = 'w1', lease_until = now() + interval '30 seconds' WHERE id = md5(:n::text)::uuid;
UPDATE refunds SET status = 'processing', provider_state = 'unknown', provider_request_id = 'r' || :n, status_changed_at = now(), updated_at = now() WHERE id = md5(:n::text)::uuid;
UPDATE refunds SET provider_refund_id = 'b' || :n, provider_state = 'acknowledged', next_check_at = now() + interval '1 second', lease_owner = NULL, lease_until = NULL, updated_at = now() WHERE id = md5(:n::text)::uuid;
UPDATE refunds SET lease_owner = 'w1', lease_until = now() + interval '30 seconds' WHERE id = md5(:n::text)::uuid;
UPDATE refunds SET status = 'succeeded', refunded_amount = amount, provider_status = 'SUCCESS', completed_at = now(), next_check_at = NULL, lease_owner = NULL, lease_until = NULL, status_changed_at = now(), updated_at = now() WHERE id = md5(:n::text)::uuid;
