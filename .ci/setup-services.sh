#!/usr/bin/env bash
# Installs what the tests' real servers need (see crates/tenant-testkit):
#   * PostgreSQL 15 server binaries (initdb, postgres) with contrib (pgcrypto)
#   * the unprivileged `postgres` system user (PostgreSQL refuses to run as root)
#   * redis-server
#   * curl (run inside the tool sandbox by the egress tests)
# Idempotent: installs only what is missing and runs `apt-get update` only
# when something has to be installed. Non-interactive. Exits non-zero with a
# message on failure.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

log() { printf 'setup-services: %s\n' "$*"; }
die() { printf 'setup-services: ERROR: %s\n' "$*" >&2; exit 1; }

apt_updated=0
apt_install() {
    [ "$(id -u)" -eq 0 ] || die "need root to install $* (no sudo here); install it by hand"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        apt-get -o DPkg::Lock::Timeout=300 update -qq || die "apt-get update failed"
        apt_updated=1
    fi
    log "apt-get install $*"
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" \
        >/tmp/setup-services-apt.log 2>&1 \
        || { tail -n 30 /tmp/setup-services-apt.log >&2; die "apt-get install $* failed"; }
}

# Prints the first directory holding both initdb and postgres (same search
# order as tenant_testkit::PostgresBinaries::locate), or nothing.
find_pg_bindir() {
    local dir
    local -a dirs=()
    [ -n "${TENANT_TESTKIT_PG_BIN_DIR:-}" ] && dirs+=("$TENANT_TESTKIT_PG_BIN_DIR")
    IFS=: read -r -a path_dirs <<<"${PATH:-}"
    dirs+=("${path_dirs[@]}")
    # Highest version first.
    while IFS= read -r dir; do
        dirs+=("$dir")
    done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -V -r)
    for dir in "${dirs[@]}"; do
        if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done
    return 0
}

# --- PostgreSQL --------------------------------------------------------------
pg_bindir="$(find_pg_bindir)"
if [ -z "$pg_bindir" ]; then
    log "PostgreSQL server binaries not found: installing postgresql-15"
    apt_install postgresql-15
    pg_bindir="$(find_pg_bindir)"
    [ -n "$pg_bindir" ] || die "initdb/postgres still not found after installing postgresql-15"
fi
pg_version="$("$pg_bindir/postgres" --version 2>/dev/null || true)"
[ -n "$pg_version" ] || die "$pg_bindir/postgres does not run"
log "PostgreSQL: $pg_version in $pg_bindir"
case "$pg_version" in
    *" 15."*) ;;
    *) log "warning: the SDK targets PostgreSQL 15; found: $pg_version" ;;
esac

pg_major="$(printf '%s\n' "$pg_version" | sed -n 's/.* \([0-9][0-9]*\)\..*/\1/p' | head -n 1)"
if ! ls /usr/share/postgresql/"${pg_major:-*}"/extension/pgcrypto.control >/dev/null 2>&1 \
    && ! ls /usr/local/share/postgresql/extension/pgcrypto.control >/dev/null 2>&1; then
    log "pgcrypto not found: installing postgresql-contrib"
    apt_install "postgresql-contrib"
fi

if id -u postgres >/dev/null 2>&1; then
    log "system user postgres exists (uid $(id -u postgres))"
else
    [ "$(id -u)" -eq 0 ] || die "system user postgres is missing and we are not root to create it"
    log "creating system user postgres"
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/sh postgres \
        || die "useradd postgres failed"
fi

# --- Redis -------------------------------------------------------------------
redis_bin="${TENANT_TESTKIT_REDIS_SERVER:-}"
if [ -z "$redis_bin" ] || [ ! -x "$redis_bin" ]; then
    redis_bin="$(command -v redis-server || true)"
fi
if [ -z "$redis_bin" ]; then
    for candidate in /usr/bin/redis-server /usr/local/bin/redis-server /usr/sbin/redis-server; do
        if [ -x "$candidate" ]; then redis_bin="$candidate"; break; fi
    done
fi
if [ -z "$redis_bin" ]; then
    log "redis-server not found: installing redis-server"
    apt_install redis-server
    redis_bin="$(command -v redis-server || true)"
    [ -n "$redis_bin" ] || die "redis-server still not found after installing it"
fi
log "Redis: $("$redis_bin" --version) at $redis_bin"

# --- curl (the egress-proxy tests run it inside the sandbox) -------------------
if ! command -v curl >/dev/null 2>&1; then
    log "curl not found: installing curl"
    apt_install curl ca-certificates
fi

log "done"
