#!/bin/sh
# Creates Temporal's two databases if missing and brings both schemas to the version of this
# admin-tools image (the image's own schema files). Safe to run on every start: `create` on an
# existing database fails harmlessly, setup-schema -v 0.0 only initialises an empty schema, and
# update-schema applies only what is missing. Connection: SQL_* (see compose.yaml).
set -eu

tool() {
  temporal-sql-tool --plugin "$SQL_PLUGIN" --endpoint "$SQL_HOST" --port "$SQL_PORT" \
    --user "$SQL_USER" "$@"
}

i=0
until nc -z "$SQL_HOST" "$SQL_PORT"; do
  i=$((i + 1))
  [ "$i" -lt 60 ] || { echo "PostgreSQL not reachable at $SQL_HOST:$SQL_PORT" >&2; exit 1; }
  sleep 2
done

SCHEMA=/etc/temporal/schema/postgresql/v12
for db in temporal temporal_visibility; do
  tool --db "$db" create 2>/dev/null || echo "database $db exists"
done
tool --db temporal setup-schema -v 0.0
tool --db temporal update-schema -d "$SCHEMA/temporal/versioned"
tool --db temporal_visibility setup-schema -v 0.0
tool --db temporal_visibility update-schema -d "$SCHEMA/visibility/versioned"
echo "Temporal schemas are up to date"
