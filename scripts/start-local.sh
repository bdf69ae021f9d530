#!/usr/bin/env bash
# `npm start`: one-command local start on a fresh machine.
#
#   1. loads .env if present (variables already set in the environment win);
#   2. makes sure PostgreSQL and Redis run and the database exists (scripts/ensure-services.sh);
#   3. installs dependencies when node_modules is missing or older than package-lock.json;
#   4. builds, then runs dist/src/main.js with SANDBOX=true and LOG_LEVEL=info unless set.
#
# Logs are JSON lines; on a terminal they are piped through pino-pretty.
# SKIP_ENSURE_SERVICES=true skips step 2 (e.g. when DATABASE_URL/REDIS_URL point elsewhere).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[start-local] %s\n' "$*" >&2; }

# --- .env: KEY=VALUE lines, '#' comments, optional `export ` and quotes; never overrides.
if [ -f .env ]; then
  log "loading .env (variables already set in the environment take precedence)"
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line%$'\r'}"
    [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
    if [[ ! "$line" =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
      log "ignoring malformed .env line: ${line%%=*}"
      continue
    fi
    key="${BASH_REMATCH[2]}"
    value="${BASH_REMATCH[3]}"
    # Strip surrounding quotes; an unquoted value ends at an inline " #" comment.
    if [[ "$value" =~ ^\"(.*)\"[[:space:]]*$ ]] || [[ "$value" =~ ^\'(.*)\'[[:space:]]*$ ]]; then
      value="${BASH_REMATCH[1]}"
    else
      value="${value%%[[:space:]]#*}"
      value="${value%"${value##*[![:space:]]}"}"
    fi
    if [ -z "${!key+set}" ]; then
      export "$key=$value"
    fi
  done <.env
fi

export SANDBOX="${SANDBOX:-true}"
export LOG_LEVEL="${LOG_LEVEL:-info}"

# --- services
case "${SKIP_ENSURE_SERVICES:-false}" in
  true | 1 | yes) log "SKIP_ENSURE_SERVICES set: not checking PostgreSQL/Redis" ;;
  *) bash scripts/ensure-services.sh ;;
esac

# --- dependencies (npm ci is not usable here; npm install honours the lock)
if [ ! -d node_modules ] || [ ! -f node_modules/.package-lock.json ] ||
  [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing dependencies (npm install)"
  npm install --no-audit --no-fund
fi

# --- build
log "building (npm run build)"
npm run build

# --- start
port="${PORT:-3000}"
role="${ROLE:-all}"
echo
if [ "$role" != "worker" ]; then
  echo "  Refund service (ROLE=$role, SANDBOX=$SANDBOX) starting on http://127.0.0.1:$port"
  echo "  health:  http://127.0.0.1:$port/health/ready"
  if [[ "$SANDBOX" =~ ^(true|1|yes)$ ]]; then
    echo "  sandbox: http://127.0.0.1:$port/sandbox"
  fi
else
  echo "  Refund service worker (ROLE=worker, SANDBOX=$SANDBOX) starting"
fi
if [ -z "${ADMIN_API_KEY:-}" ]; then
  echo "  admin API key (sandbox, local use only): sandbox_admin_key_local_only"
  echo "    e.g. curl -H 'Authorization: Bearer sandbox_admin_key_local_only' http://127.0.0.1:$port/v1/refunds"
fi
echo

# The same heap cap as the Dockerfile (RSS under 300 MB at load; docs/performance.md).
export NODE_OPTIONS="${NODE_OPTIONS:---max-old-space-size=192}"

if [ -t 1 ] && [ -x node_modules/.bin/pino-pretty ]; then
  # Not exec'd so that the pipe stays; Ctrl-C reaches node (graceful shutdown) and
  # pino-pretty (which ignores the first SIGINT and prints until node closes the pipe).
  # Called directly rather than through npx: same local devDependency, without the npx
  # start-up delay, spinner and npm config warnings on the terminal.
  set +e
  node dist/src/main.js | node_modules/.bin/pino-pretty
  status="${PIPESTATUS[0]}"
  exit "$status"
fi
exec node dist/src/main.js
