#!/usr/bin/env bash
# Usage: scripts/openapi-tools.sh validator|schemathesis
# Installs the OpenAPI tools the server's tests run (ota-server/server/tests/it/openapi.rs), from PyPI into one
# virtualenv cached under ~/.cache/ota-tools/, and prints the path of a command that runs the one asked for; quick
# when they are there (first install: ~16 s of CPU). Needs python3 with venv (Debian: python3-venv, listed in
# scripts/install-deps.sh).
set -euo pipefail
validator=0.7.2
schemathesis=3.39.16
hypothesis=6.129.5 # what schemathesis 3.39 was released against (later ones break its strategies)
dir="${OTA_TOOLS_CACHE:-$HOME/.cache/ota-tools}/openapi-tools-$validator-$schemathesis-$hypothesis"
case "${1:-}" in
  validator) module=openapi_spec_validator ;;
  schemathesis) module=schemathesis.cli ;;
  *) echo "usage: $0 validator|schemathesis" >&2; exit 2 ;;
esac
if [ ! -x "$dir/bin/python" ]; then
  mkdir -p "$(dirname "$dir")"
  # Built aside and moved into place whole, so a run killed halfway leaves nothing that looks installed.
  tmp="$(mktemp -d "$dir.tmp.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  echo "openapi-tools.sh: installing openapi-spec-validator $validator and schemathesis $schemathesis into $dir" >&2
  python3 -m venv "$tmp" >&2
  "$tmp/bin/python" -m pip install --quiet --disable-pip-version-check \
    "openapi-spec-validator==$validator" "schemathesis==$schemathesis" "hypothesis==$hypothesis" >&2
  rm -rf "$dir"
  mv "$tmp" "$dir"
fi
# Run through the venv's python (`-m`): the scripts pip wrote name the temporary directory.
cmd="$dir/$1"
[ -x "$cmd" ] || { printf '#!/bin/sh\nexec "%s/bin/python" -m %s "$@"\n' "$dir" "$module" >"$cmd.tmp" && chmod +x "$cmd.tmp" && mv "$cmd.tmp" "$cmd"; }
echo "$cmd"
