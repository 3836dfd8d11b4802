#!/bin/sh
# Container entrypoint: `<service> <command> [args]`, e.g. `billing serve --role worker`.
set -e
service="$1"; shift
exec python -m "$service" "$@"
