#!/bin/bash
# usage: go.sh <with_fk 0|1> <tag>
export PGPASSWORD=postgres
P="/usr/lib/postgresql/15/bin/psql -h 127.0.0.1 -p 55432 -U postgres -q -v ON_ERROR_STOP=1"
db=fkb_$2
$P -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
for m in ${MIGRATIONS:-/work/main/core-app/migrations/000[1-4]*.sql}; do $P -d $db -f $m >/dev/null; done
# (fk=0 applied a migration dropping the two foreign keys; it is not in the tree)
$P -d $db -f setup.sql >/dev/null
out=$($P -d $db -At -f run.sql)
b=$(echo "$out" | awk '/cpu_before/{print $2}'); a=$(echo "$out" | awk '/cpu_after/{print $2}')
echo "fk=$1 ticks=$((a-b)) us_per_event=$(( (a-b)*10000/6000 )) $(echo "$out" | tail -1)"
[ -z "$KEEP" ] && $P -d postgres -c "DROP DATABASE $db" >/dev/null
