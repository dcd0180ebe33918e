#!/usr/bin/env bash
# Prints a PostgreSQL URL for the test suite, starting a server if needed. Never skips:
#   1. CUSTOS_TEST_PG_URL, if set;
#   2. else 127.0.0.1:5432 if it answers (trust auth, database "test" or "postgres");
#   3. else (or with CUSTOS_TEST_PG_THROWAWAY=1) a throwaway cluster (initdb/pg_ctl) on 127.0.0.1:55432 in target/pg-throwaway,
#      installing Debian's postgresql first if initdb is missing.
# Exits non-zero with a reason if none of these works.
set -euo pipefail
log() { echo "pg-for-tests: $*" >&2; }

can_connect() {
  python3 - "$1" <<'PY' >/dev/null 2>&1
import socket, sys
host, port = sys.argv[1].split(":")
s = socket.create_connection((host, int(port)), timeout=2)
s.close()
PY
}

if [ -n "${CUSTOS_TEST_PG_URL:-}" ]; then
  log "using CUSTOS_TEST_PG_URL"
  echo "$CUSTOS_TEST_PG_URL"
  exit 0
fi

if [ -z "${CUSTOS_TEST_PG_THROWAWAY:-}" ] && can_connect 127.0.0.1:5432; then
  for db in test postgres; do
    url="host=127.0.0.1 port=5432 user=postgres dbname=$db"
    if ! command -v psql >/dev/null || psql "$url" -Atc 'select 1' >/dev/null 2>&1; then
      log "using the server at 127.0.0.1:5432 ($db)"
      echo "$url"
      exit 0
    fi
  done
  log "127.0.0.1:5432 answers but refuses user postgres; starting a throwaway cluster"
fi

find_initdb() {
  command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1
}
INITDB=$(find_initdb || true)
if [ -z "$INITDB" ]; then
  log "installing postgresql with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  INITDB=$(find_initdb)
fi
BIN=$(dirname "$(readlink -f "$INITDB")")
[ -x "$BIN/pg_ctl" ] || BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -n1)")
DIR="$(pwd)/target/pg-throwaway"
PORT=55432
RUN=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  RUN=(runuser -u postgres --)
fi
if ! can_connect 127.0.0.1:$PORT; then
  rm -rf "$DIR"
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$DIR"
  "${RUN[@]}" "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust >/dev/null
  "${RUN[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w \
    -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=on" start >&2
fi
log "using a throwaway cluster on 127.0.0.1:$PORT (stop: pg_ctl -D $DIR/data stop)"
echo "host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
