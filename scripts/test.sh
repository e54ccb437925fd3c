#!/usr/bin/env bash
# The whole test suite: installs the tools the tests check against, then runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p ota-client).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh browser vm uboot-build pkcs11
scripts/install-s3s-fs.sh   # the S3 bundle-store tests' server (cached in ~/.cache/ota-tools)
if [ $# -gt 0 ]; then
  exec cargo test --workspace --locked "$@"
fi

# The QEMU scenarios (ota-vm-tests) keep one core busy for about 13 minutes with one VM at a time while the rest
# of the suite often leaves a core idle: build every test once, then run the VM tests' executables beside the
# rest of the suite (which excludes them; excluding them changes no feature, so nothing is rebuilt).
artifacts=$(mktemp)
trap 'rm -f "$artifacts"' EXIT
cargo test --workspace --locked --no-run --message-format=json-render-diagnostics >"$artifacts"
mapfile -t vm_tests < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"] \
            and "ota-vm-tests@" in m["package_id"]:
        print(m["executable"])' "$artifacts")
if [ "${#vm_tests[@]}" -eq 0 ]; then
  echo "test.sh: found no ota-vm-tests executables to run" >&2
  exit 1
fi
(
  cd tests/vm # where `cargo test` runs a package's tests
  for t in "${vm_tests[@]}"; do
    "$t" 2>&1 | sed -u 's/^/[vm] /'
  done
) &
vm_pid=$!
status=0
cargo test --workspace --locked --exclude ota-vm-tests || status=$?
if ! wait "$vm_pid"; then
  echo "test.sh: the VM tests (lines marked [vm]) failed" >&2
  status=1
fi
exit "$status"
