#!/bin/sh
# Registers the journey's custom search attributes on the namespace (idempotent: attributes
# that already exist are left alone, whatever the server version answers to a duplicate).
# Connection comes from the standard CLI variables: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, and
# TEMPORAL_API_KEY / TEMPORAL_TLS* for Temporal Cloud or a secured cluster.
# Names and types are fixed by workflows/ids.py (SEARCH_ATTRIBUTES).
set -eu

ATTRIBUTES="JourneyStage=Keyword NextActionAt=Datetime ClinicId=Keyword JourneyFlags=KeywordList"
TRIES="${SEARCH_ATTRIBUTES_WAIT_TRIES:-60}"

i=0
until temporal operator namespace describe >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -ge "$TRIES" ]; then
    echo "namespace ${TEMPORAL_NAMESPACE:-default} not reachable at ${TEMPORAL_ADDRESS:-localhost:7233}" >&2
    exit 1
  fi
  sleep 2
done

existing="$(temporal operator search-attribute list --output json)"
for spec in $ATTRIBUTES; do
  name="${spec%%=*}"
  type="${spec#*=}"
  if printf '%s' "$existing" | grep -q "\"$name\""; then
    echo "search attribute $name exists"
    continue
  fi
  temporal operator search-attribute create --name "$name" --type "$type"
  echo "search attribute $name ($type) created"
done
