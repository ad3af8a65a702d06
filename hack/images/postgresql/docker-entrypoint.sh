#!/bin/sh
# The official postgres image's entry-point contract, for Debian's PostgreSQL 15:
# on an empty PGDATA, initdb with POSTGRES_USER/POSTGRES_PASSWORD, create POSTGRES_DB,
# run /docker-entrypoint-initdb.d/*.sql|*.sh, then exec the server. Runs as the image's
# non-root user only (no gosu/su: the pod's securityContext picks the user).
set -eu

# `-c name=value ...` alone means "postgres with these settings"
if [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi

from_file() {  # VAR: the value of VAR, or of the file named by VAR_FILE
    eval "value=\${$1:-}"
    eval "file=\${$1_FILE:-}"
    if [ -n "$value" ] && [ -n "$file" ]; then
        echo "error: both $1 and $1_FILE are set (choose one)" >&2
        exit 1
    fi
    if [ -n "$file" ]; then
        value=$(cat "$file")
    fi
    printf '%s' "$value"
}

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    POSTGRES_USER=$(from_file POSTGRES_USER)
    POSTGRES_USER=${POSTGRES_USER:-postgres}
    POSTGRES_PASSWORD=$(from_file POSTGRES_PASSWORD)
    POSTGRES_DB=$(from_file POSTGRES_DB)
    POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$auth" != trust ]; then
        cat >&2 <<'MSG'
error: Database is uninitialized and superuser password is not specified.
       Set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) to a non-empty value, or
       POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password
       (not recommended).
MSG
        exit 1
    fi
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA" 2>/dev/null || :
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:-unused}" > "$pwfile"
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words, as upstream
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" -D "$PGDATA" \
        ${POSTGRES_INITDB_ARGS:-}
    rm -f "$pwfile"
    printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"

    # a server on the socket only, for the set-up below
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    psql() { command psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password "$@"; }
    if [ "$POSTGRES_DB" != postgres ]; then
        psql --dbname postgres --set db="$POSTGRES_DB" <<'SQL'
CREATE DATABASE :"db" ;
SQL
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) echo "running $f"; . "$f" ;;
            *.sql) echo "running $f"; psql --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz) echo "running $f"; gunzip -c "$f" | psql --dbname "$POSTGRES_DB" ;;
            *"/*") ;;
            *) echo "ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
