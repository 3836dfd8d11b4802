#!/bin/sh
# PostgreSQL init script: one database per Backhaul service (each service owns its data).
set -e
for db in $(echo "$POSTGRES_MULTIPLE_DATABASES" | tr ',' ' '); do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" -c "CREATE DATABASE \"$db\""
done
