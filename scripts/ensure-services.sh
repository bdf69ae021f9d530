#!/usr/bin/env bash
# Makes sure the local PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) that the
# service and its tests use are running, and that the database named in DATABASE_URL
# exists. Idempotent: when everything is already up it only checks and returns.
#
#   bash scripts/ensure-services.sh
#
# On a fresh Debian machine it installs the missing server packages with apt-get
# (as root, or through sudo) and sets local TCP connections to trust authentication.
#
# Environment:
#   DATABASE_URL           database to create if missing (only when its host is local);
#                          default postgres://postgres@127.0.0.1:5432/refunds
#   SERVICES_WAIT_SECONDS  how long to wait for both services to answer (default 30)
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
WAIT_SECONDS="${SERVICES_WAIT_SECONDS:-30}"
DATABASE_URL_EFFECTIVE="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/refunds}"

log() { printf '[ensure-services] %s\n' "$*"; }
die() { printf '[ensure-services] ERROR: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# Runs a command as root: directly when we are root, through sudo when it exists.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif have sudo; then
    sudo -n "$@" || die "'sudo $*' failed (is passwordless sudo set up?)"
  else
    die "need root to run '$*', and sudo is not available"
  fi
}

APT_UPDATED=0
apt_install() {
  have apt-get || die "cannot install $* : apt-get not found (this script expects Debian)"
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

pg_up() { have pg_isready && pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1; }
redis_up() { have redis-cli && [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }

# The PostgreSQL major version to use, e.g. "15": the newest one with a configuration
# directory, else the newest one whose server binaries are installed.
pg_version() {
  local dir v
  for dir in /etc/postgresql /usr/lib/postgresql; do
    # shellcheck disable=SC2012
    v="$(ls "$dir" 2>/dev/null | sort -V | tail -n 1)"
    if [ -n "$v" ]; then
      printf '%s\n' "$v"
      return 0
    fi
  done
  return 1
}

# Local TCP connections (127.0.0.1/32 and ::1/128) authenticate with `trust`.
pg_trust_local() {
  local ver="$1" hba
  hba="/etc/postgresql/$ver/main/pg_hba.conf"
  [ -f "$hba" ] || die "pg_hba.conf not found at $hba"
  log "setting trust authentication for local TCP connections in $hba"
  as_root sed -E -i \
    's#^([[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1/32|::1/128)[[:space:]]+)[^[:space:]]+#\1trust#' \
    "$hba"
  if pg_up; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
  fi
}

start_postgres() {
  local installed=0 ver
  if ! have pg_ctlcluster || ! have pg_isready || ! have psql || [ -z "$(pg_version || true)" ]; then
    log "PostgreSQL is not installed; installing it"
    apt_install postgresql
    installed=1
  fi
  ver="$(pg_version || true)"
  [ -n "$ver" ] || die "no PostgreSQL version found under /etc/postgresql"
  if [ ! -d "/etc/postgresql/$ver/main" ]; then
    log "creating PostgreSQL $ver cluster 'main'"
    as_root pg_createcluster "$ver" main
    installed=1 # a new cluster, like a new install, needs the trust entries
  fi
  if [ "$installed" -eq 1 ]; then
    pg_trust_local "$ver"
  fi
  if pg_up; then
    return 0 # the package's post-install script may already have started it
  fi
  log "starting PostgreSQL $ver (cluster main)"
  # "already running" (e.g. listening elsewhere) is not fatal; the wait below decides.
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start ||
    log "pg_ctlcluster start returned non-zero; waiting to see whether PostgreSQL answers"
}

start_redis() {
  if ! have redis-server || ! have redis-cli; then
    log "Redis is not installed; installing it"
    apt_install redis-server
  fi
  if redis_up; then
    return 0
  fi
  log "starting Redis on $REDIS_HOST:$REDIS_PORT"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log ||
    log "redis-server returned non-zero; waiting to see whether Redis answers"
}

# --- 1. start (or install and start) what is not answering --------------------------
if pg_up; then
  log "PostgreSQL answers on $PG_HOST:$PG_PORT"
else
  start_postgres
fi
if redis_up; then
  log "Redis answers on $REDIS_HOST:$REDIS_PORT"
else
  start_redis
fi

# --- 2. wait, bounded, until both answer ---------------------------------------------
deadline=$((SECONDS + WAIT_SECONDS))
until pg_up && redis_up; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    pg_up || log "PostgreSQL still not answering on $PG_HOST:$PG_PORT (see /var/log/postgresql/)"
    redis_up || log "Redis still not answering on $REDIS_HOST:$REDIS_PORT (see /var/log/redis/ci.log)"
    die "services not ready after ${WAIT_SECONDS}s"
  fi
  sleep 1
done

# --- 3. create the application database if it is missing -----------------------------
# Parsed with node (always present for this project) so that user info, ports and
# percent-encoding are handled exactly as the service itself will read them.
if ! parsed="$(node -e '
  const u = new URL(process.argv[1]);
  if (!/^postgres(ql)?:$/.test(u.protocol)) throw new Error("not a postgres URL");
  const db = decodeURIComponent(u.pathname.replace(/^\//, ""));
  console.log([u.hostname, u.port || "5432", db].join("\t"));
' "$DATABASE_URL_EFFECTIVE" 2>/dev/null)"; then
  die "DATABASE_URL is not a valid postgres:// URL"
fi
IFS=$'\t' read -r db_host db_port db_name <<<"$parsed"

case "$db_host" in
  127.0.0.1 | localhost | "[::1]" | ::1) ;;
  *)
    log "DATABASE_URL points at $db_host, not this machine; not creating the database"
    log "ready"
    exit 0
    ;;
esac
[ -n "$db_name" ] || die "DATABASE_URL names no database"

# The maintenance database on the same server, with the same credentials.
admin_url="$(node -e '
  const u = new URL(process.argv[1]);
  u.pathname = "/postgres";
  u.search = "";
  console.log(u.toString());
' "$DATABASE_URL_EFFECTIVE")"

db_exists() {
  [ "$(psql "$admin_url" -X -tA -v ON_ERROR_STOP=1 -v dbname="$db_name" \
    <<<"SELECT 1 FROM pg_database WHERE datname = :'dbname';" 2>/dev/null)" = "1" ]
}

if ! psql "$admin_url" -X -tA -c 'SELECT 1' >/dev/null 2>&1; then
  err="$(psql "$admin_url" -X -tA -c 'SELECT 1' 2>&1 || true)"
  die "cannot connect to PostgreSQL at $db_host:$db_port as given by DATABASE_URL: $err
  (local TCP connections are expected to use trust authentication, or DATABASE_URL must carry the right password)"
fi

if db_exists; then
  log "database \"$db_name\" exists"
else
  log "creating database \"$db_name\""
  if ! psql "$admin_url" -X -q -v ON_ERROR_STOP=1 -v dbname="$db_name" \
    <<<"SELECT format('CREATE DATABASE %I', :'dbname') WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'dbname') \\gexec"; then
    # Another run may have created it at the same moment.
    db_exists || die "could not create database \"$db_name\""
  fi
fi
log "ready: PostgreSQL $PG_HOST:$PG_PORT, Redis $REDIS_HOST:$REDIS_PORT, database \"$db_name\""
