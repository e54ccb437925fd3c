#!/usr/bin/env bash
# Installs openapi-spec-validator (PyPI) into a virtualenv cached under ~/.cache/ota-tools/ and prints the path
# of a command that runs it; quick when it is there. The server's OpenAPI test (ota-server/server/tests/it/
# openapi.rs) runs this, then the command on the document the server serves. Needs python3 with venv
# (Debian: python3-venv, listed in scripts/install-deps.sh).
set -euo pipefail
version=0.7.2
dir="${OTA_TOOLS_CACHE:-$HOME/.cache/ota-tools}/openapi-spec-validator-$version"
cmd="$dir/openapi-spec-validator"
if [ ! -x "$cmd" ]; then
  mkdir -p "$(dirname "$dir")"
  # Built aside and moved into place whole, so a run killed halfway leaves nothing that looks installed.
  tmp="$(mktemp -d "$dir.tmp.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  echo "openapi-validator.sh: installing openapi-spec-validator $version into $dir" >&2
  python3 -m venv "$tmp" >&2
  "$tmp/bin/python" -m pip install --quiet --disable-pip-version-check "openapi-spec-validator==$version" >&2
  # Run through the venv's python (`-m`): the pip-made script names the temporary directory.
  printf '#!/bin/sh\nexec "%s/bin/python" -m openapi_spec_validator "$@"\n' "$dir" >"$tmp/openapi-spec-validator"
  chmod +x "$tmp/openapi-spec-validator"
  rm -rf "$dir"
  mv "$tmp" "$dir"
fi
echo "$cmd"
