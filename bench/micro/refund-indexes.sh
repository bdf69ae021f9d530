#!/usr/bin/env bash
# Micro-benchmark (docs/performance.md, finding 39): Postgres CPU per refund lifecycle
# (refund-lifecycle.sql: an insert and five updates, two of them HOT) with the refunds
# table's indexes as the migrations make them ("main": two indexes led by created_at, the
# listing's and the finance summary's) against one index serving both ("merged"). The
# merge was measured and not kept: the reads pay for it (finding 39). Each round makes a fresh
# database from the migrated template, so neither variant runs on a table the other grew;
# the variants alternate in order from round to round. Postgres CPU is the sum of utime +
# stime of every postgres process (/proc), so run it on a quiet machine.
# Run from the repository root after `npx nest build`:
#   bash bench/micro/refund-indexes.sh            (3 rounds of 20 s per variant, 16 clients)
# Environment: PGHOST (127.0.0.1), PGUSER (postgres), ROUNDS, SECONDS_PER_RUN, CLIENTS.
set -euo pipefail
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
ROUNDS=${ROUNDS:-3} SECS=${SECONDS_PER_RUN:-20} CLIENTS=${CLIENTS:-16}
HERE=$(cd "$(dirname "$0")" && pwd)
TPL=bench_idx_tpl_$$
TICKS=$(getconf CLK_TCK)

# utime + stime of every live postgres process, plus the postmasters' reaped children
# (cutime + cstime): a backend's CPU moves there when its connection closes.
pg_cpu_ticks() {
  local t=0 pid
  for pid in $(pgrep -x postgres || true); do
    [ -r /proc/$pid/stat ] || continue
    t=$((t + $(awk '{print $14 + $15 + $16 + $17}' /proc/$pid/stat 2>/dev/null || echo 0)))
  done
  echo $t
}

cleanup() { psql -qX -d postgres -c "DROP DATABASE IF EXISTS $TPL WITH (FORCE)" >/dev/null 2>&1 || true; }
trap cleanup EXIT

psql -qX -d postgres -c "CREATE DATABASE $TPL"
DATABASE_URL="postgres://$PGUSER@$PGHOST:${PGPORT:-5432}/$TPL" node dist/src/database/migrate.js >/dev/null
psql -qX -d $TPL -c "ALTER DATABASE $TPL SET synchronous_commit = off" \
  -c "INSERT INTO merchants (id) VALUES ('m1')" \
  -c "INSERT INTO payments (provider, payment_id, merchant_id, amount, currency, status)
        SELECT 'binance_pay', 'p' || g, 'm1', 1000000000, 'USDT', 'paid' FROM generate_series(1, 1000) g" >/dev/null

variant_sql() {
  case $1 in
    main) echo "SELECT 1" ;;
    # The listing's (created_at DESC, id DESC) served by a backward scan of the finance index
    # with id as a second key column: one index fewer on every non-HOT update.
    merged) echo "DROP INDEX refunds_created_idx; DROP INDEX refunds_finance_summary_idx;
                  CREATE INDEX refunds_finance_summary_idx ON refunds (created_at, id)
                    INCLUDE (provider, currency, status, merchant_id, amount, refunded_amount)" ;;
  esac
}

printf '%-6s %-7s %9s %12s\n' round variant 'tx/s' 'pg CPU ms/lifecycle'
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then order="main merged"; else order="merged main"; fi
  for v in $order; do
    db=bench_idx_${v}_$$
    psql -qX -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db TEMPLATE $TPL" >/dev/null
    psql -qX -d $db -c "$(variant_sql $v)" -c "VACUUM ANALYZE" >/dev/null
    c0=$(pg_cpu_ticks)
    out=$(pgbench -n -c "$CLIENTS" -j 2 -T "$SECS" -f "$HERE/refund-lifecycle.sql" "$db" 2>&1)
    c1=$(pg_cpu_ticks)
    n=$(echo "$out" | awk '/number of transactions actually processed/ {print $NF}' | cut -d/ -f1)
    tps=$(echo "$out" | awk '/^tps/ {printf "%d", $3}')
    ms=$(awk -v d=$((c1 - c0)) -v n="$n" -v t="$TICKS" 'BEGIN {printf "%.3f", d * 1000 / t / n}')
    printf '%-6s %-7s %9s %12s\n' "$r" "$v" "$tps" "$ms"
    psql -qX -d postgres -c "DROP DATABASE $db WITH (FORCE)" >/dev/null
  done
done
