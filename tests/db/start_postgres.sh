#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for the desgw.db tests and print its SQLAlchemy URL.
#
#   url=$(tests/db/start_postgres.sh)            # start; the URL goes to stdout, the rest to stderr
#   DESGW_TEST_PG_URL=$url pytest tests/db
#   tests/db/start_postgres.sh stop "$url"       # stop the cluster and delete its directory
#
# The cluster lives in a fresh temporary directory (initdb as the postgres user when run as
# root, else as the current user), listens on 127.0.0.1 only, on a free port, with a Unix socket
# inside that directory; host logins need a random password (scram-sha-256). It creates the
# database desgw_test. Needs PostgreSQL server binaries (Debian: apt-get install postgresql);
# set PGBIN to choose the bin directory (default: the newest /usr/lib/postgresql/*/bin).
set -euo pipefail

find_pgbin() {
    if [[ -n "${PGBIN:-}" ]]; then echo "$PGBIN"; return; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -z "$d" ]]; then
        echo "start_postgres.sh: no PostgreSQL server binaries (initdb) found; set PGBIN" >&2
        exit 2
    fi
    echo "$d"
}

as_owner() {
    # run a command as the cluster owner (postgres when we are root)
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

PGBIN=$(find_pgbin)

if [[ "${1:-}" == "stop" ]]; then
    url=${2:?usage: start_postgres.sh stop URL}
    port=$(sed -E 's#.*@127\.0\.0\.1:([0-9]+)/.*#\1#' <<<"$url")
    for dir in /tmp/desgw-pg.*; do
        if [[ -f "$dir/port" && "$(cat "$dir/port")" == "$port" ]]; then
            as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
            rm -rf "$dir"
            echo "stopped the cluster in $dir" >&2
            exit 0
        fi
    done
    echo "start_postgres.sh: no cluster on port $port found under /tmp/desgw-pg.*" >&2
    exit 1
fi

port_free() {  # true when nothing accepts connections on 127.0.0.1:$1
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

port=""
for _ in $(seq 1 200); do
    candidate=$(( 20000 + RANDOM % 40000 ))
    if port_free "$candidate"; then port=$candidate; break; fi
done
[[ -n "$port" ]] || { echo "start_postgres.sh: no free port found" >&2; exit 1; }

dir=$(mktemp -d /tmp/desgw-pg.XXXXXX)
password=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
printf '%s\n' "$password" > "$dir/pwfile"
echo "$port" > "$dir/port"
if [[ $(id -u) -eq 0 ]]; then chown -R postgres "$dir"; fi
chmod 700 "$dir"

as_owner "$PGBIN/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
rm -f "$dir/pwfile"
as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start >&2 \
    || { cat "$dir/server.log" >&2; exit 1; }
as_owner "$PGBIN/createdb" -h "$dir" -p "$port" -U postgres desgw_test >&2

echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') running in $dir on 127.0.0.1:$port" >&2
echo "postgresql+psycopg://postgres:${password}@127.0.0.1:${port}/desgw_test"
