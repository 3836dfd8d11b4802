#!/bin/sh
# PostgreSQL init script (docker-entrypoint-initdb.d, first start of the volume only): one
# database per Backhaul service, owned by a role of the same name, since each service owns
# its data and nothing else. Development only: each role's password is its name.
set -eu
for name in $(echo "${BACKHAUL_DATABASES:?comma-separated database names}" | tr ',' ' '); do
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres <<SQL
CREATE ROLE "$name" LOGIN PASSWORD '$name';
CREATE DATABASE "$name" OWNER "$name";
REVOKE ALL ON DATABASE "$name" FROM PUBLIC;
SQL
done
