#!/usr/bin/env bash
# Installs what the tests' real servers need (see crates/tenant-testkit):
#   * PostgreSQL 15 server binaries (initdb, postgres) with contrib (pgcrypto)
#   * the unprivileged `postgres` system user (PostgreSQL refuses to run as root)
#   * redis-server (single servers and clusters)
#   * pgbouncer (pooled-connection tests), clang + libclang-dev (bindgen for
#     pg_query), bubblewrap, linux-perf, curl
#   * the Citus extension, from <shared>/pg/citus-<version>-pg<major>.tar.gz
#     when the shared directory has it (else the Citus tests are skipped)
# and reports whether a Qdrant server binary is available (the test kit
# unpacks <shared>/bin/qdrant-<version>.gz itself; without it the Qdrant
# server tests are skipped). <shared> is $TENANT_SDK_SHARED_DIR, else
# ../shared next to the repository, else /work/shared.
# Idempotent: installs only what is missing and runs `apt-get update` only
# when something has to be installed. Non-interactive. Exits non-zero with a
# message on failure.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

repo_root="$(cd "$(dirname "$0")/.." && pwd)"

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

# --- Other Debian packages ----------------------------------------------------
# pgbouncer: tenant_testkit::TestPgBouncer; clang, libclang-dev: bindgen (the
# pg_query crate); bubblewrap: sandbox tests; linux-perf: profiling; curl.
wanted_packages=(pgbouncer clang libclang-dev bubblewrap linux-perf curl)
missing_packages=()
if command -v dpkg-query >/dev/null 2>&1; then
    for package in "${wanted_packages[@]}"; do
        status="$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)"
        [ "$status" = "install ok installed" ] || missing_packages+=("$package")
    done
    if [ "${#missing_packages[@]}" -gt 0 ]; then
        log "missing packages: ${missing_packages[*]}"
        apt_install "${missing_packages[@]}"
    fi
    log "packages present: ${wanted_packages[*]}"
else
    log "warning: not a Debian system; make sure these are installed: ${wanted_packages[*]}"
fi
pgbouncer_bin="${TENANT_TESTKIT_PGBOUNCER:-}"
[ -n "$pgbouncer_bin" ] && [ -x "$pgbouncer_bin" ] || pgbouncer_bin="$(command -v pgbouncer || true)"
[ -n "$pgbouncer_bin" ] || { [ -x /usr/sbin/pgbouncer ] && pgbouncer_bin=/usr/sbin/pgbouncer; }
[ -n "$pgbouncer_bin" ] || die "pgbouncer not found after installing it"
log "PgBouncer: $("$pgbouncer_bin" --version | head -n 1) at $pgbouncer_bin"

# --- The shared directory (Qdrant binary, Citus build) ------------------------
shared_dirs=()
[ -n "${TENANT_SDK_SHARED_DIR:-}" ] && shared_dirs+=("$TENANT_SDK_SHARED_DIR")
shared_dirs+=("$(dirname "$repo_root")/shared" /work/shared)

# Prints the newest file matching <shared dir>/$1 (a glob), or nothing.
newest_shared() {
    local dir
    for dir in "${shared_dirs[@]}"; do
        # shellcheck disable=SC2086 # $1 is a glob on purpose
        found="$(ls -d "$dir"/$1 2>/dev/null | sort -V | tail -n 1)"
        if [ -n "$found" ]; then
            printf '%s\n' "$found"
            return 0
        fi
    done
    return 0
}

# --- Citus ---------------------------------------------------------------------
# pg_config next to the real postgres (PATH may hold symlinks to it).
pg_real_bindir="$(dirname "$(readlink -f "$pg_bindir/postgres")")"
pg_config_bin="$pg_real_bindir/pg_config"
[ -x "$pg_config_bin" ] || pg_config_bin="$(command -v pg_config || true)"
if [ -n "$pg_config_bin" ]; then
    pg_pkglibdir="$("$pg_config_bin" --pkglibdir)"
    pg_extdir="$("$pg_config_bin" --sharedir)/extension"
else
    pg_pkglibdir="$(dirname "$pg_real_bindir")/lib"
    pg_extdir="/usr/share/postgresql/${pg_major}/extension"
fi
# Whether the postgres server loads Citus (a throw-away cluster in
# single-user mode); sets citus_load_error otherwise.
citus_load_error=""
citus_loads() {
    local dir
    local -a as_pg=()
    dir="$(mktemp -d)"
    chmod 755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
        as_pg=(runuser -u postgres --)
    fi
    if "${as_pg[@]}" "$pg_bindir/initdb" -D "$dir/data" -A trust -U postgres --no-sync \
            >"$dir/out" 2>&1 \
        && echo "SELECT 1;" | "${as_pg[@]}" "$pg_bindir/postgres" --single -D "$dir/data" \
            -c shared_preload_libraries=citus postgres >>"$dir/out" 2>&1; then
        rm -rf -- "$dir"
        return 0
    fi
    citus_load_error="$(grep -m 1 -E 'FATAL|ERROR|error' "$dir/out" || tail -n 1 "$dir/out")"
    rm -rf -- "$dir"
    return 1
}

citus_tar="$(newest_shared "pg/citus-*-pg${pg_major}.tar.gz")"
if [ -n "$citus_tar" ]; then
    citus_tmp="$(mktemp -d)"
    tar xzf "$citus_tar" -C "$citus_tmp" || die "cannot unpack $citus_tar"
    citus_top="$(find "$citus_tmp" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
    [ -f "$citus_top/lib/citus.so" ] && [ -f "$citus_top/extension/citus.control" ] \
        || die "$citus_tar does not hold lib/citus.so and extension/citus.control"
    if cmp -s "$citus_top/lib/citus.so" "$pg_pkglibdir/citus.so" \
        && cmp -s "$citus_top/extension/citus.control" "$pg_extdir/citus.control"; then
        log "Citus: files already installed from $citus_tar"
    else
        [ "$(id -u)" -eq 0 ] || die "need root to install Citus into $pg_pkglibdir"
        cp -a "$citus_top"/lib/. "$pg_pkglibdir"/ || die "copying Citus libraries failed"
        cp -a "$citus_top"/extension/. "$pg_extdir"/ || die "copying Citus extension files failed"
        log "Citus: installed from $citus_tar into $pg_pkglibdir and $pg_extdir"
    fi
    if ! citus_loads; then
        # A build against newer minor-release headers needs symbols an older
        # server lacks ("undefined symbol"): take Debian's current point
        # release of the server, then try again.
        log "Citus does not load into $pg_version: $citus_load_error"
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
            log "upgrading postgresql-${pg_major} to Debian's current point release"
            apt_install "postgresql-${pg_major}"
            pg_version="$("$pg_bindir/postgres" --version 2>/dev/null || true)"
            log "PostgreSQL: $pg_version"
        fi
        if citus_loads; then
            log "Citus: loads into $pg_version"
        else
            # Leave no half-working install behind: the test kit then reports
            # CitusNotFound and the Citus tests are skipped.
            (cd "$citus_top/lib" && find . -type f) | while IFS= read -r file; do
                rm -f -- "$pg_pkglibdir/$file"
            done
            (cd "$citus_top/extension" && find . -type f) | while IFS= read -r file; do
                rm -f -- "$pg_extdir/$file"
            done
            log "Citus: removed again, it does not load ($citus_load_error): Citus tests will be skipped"
        fi
    else
        log "Citus: loads into $pg_version"
    fi
    rm -rf -- "$citus_tmp"
elif [ -f "$pg_pkglibdir/citus.so" ] && [ -f "$pg_extdir/citus.control" ]; then
    log "Citus: installed ($pg_pkglibdir/citus.so); no build in the shared directory"
else
    log "Citus: not installed and no pg/citus-*-pg${pg_major}.tar.gz in ${shared_dirs[*]}: Citus tests will be skipped"
fi

# --- Qdrant (report only; the test kit unpacks it) -----------------------------
qdrant_bin=""
if [ -n "${TENANT_TESTKIT_QDRANT_BIN:-}" ] && [ -x "$TENANT_TESTKIT_QDRANT_BIN" ]; then
    qdrant_bin="$TENANT_TESTKIT_QDRANT_BIN"
else
    qdrant_bin="$(newest_shared "bin/qdrant-*.gz")"
fi
[ -n "$qdrant_bin" ] || qdrant_bin="$(command -v qdrant || true)"
if [ -n "$qdrant_bin" ]; then
    log "Qdrant: $qdrant_bin"
else
    log "Qdrant: not found: server tests will be skipped"
fi

log "done"
