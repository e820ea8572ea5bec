#!/usr/bin/env bash
# Checks the workspace's dependency tree (Cargo.lock) against the RustSec advisory database,
# offline: the database is the snapshot in ../shared/advisory-db (its SNAPSHOT.md says of when),
# read as a plain directory (--no-fetch), and yanked crates are not looked up (that needs the
# registry's index). A vulnerability fails the check; unmaintained and unsound crates are listed
# as warnings and do not. The fuzz targets' lock file is held to the same rule. The benchmark's
# reference shim (benches/reference-shim, not shipped: the yardstick, built with the crates
# runwasi's containerd-shim-wasm pins) is reported too, without failing the check: its findings
# are runwasi's to fix, and changing its dependencies would change what is measured. Set
# WASMCELL_ADVISORY_DB to check against another copy of the database.
set -euo pipefail
cd "$(dirname "$0")/../.."
db=${WASMCELL_ADVISORY_DB:-$(cd .. && pwd)/shared/advisory-db}
if [ ! -d "$db/crates" ]; then
  echo "audit: no advisory database at $db (expected the RustSec snapshot in ../shared/advisory-db)" >&2
  exit 2
fi
audit=$(bash test/tools/build.sh cargo-audit)/cargo-audit
snapshot=$(grep -o 'commit of [0-9-]*' "$db/SNAPSHOT.md" | head -1 || true)
# cargo-audit's status is the function's: 1 for a vulnerability, 2 when something did not load.
check() {
  echo "== cargo audit $1 (RustSec database, ${snapshot:-$db})"
  "$audit" audit --db "$db" --no-fetch --no-yanked --file "$1" 2>&1 || return
}
status=0
check Cargo.lock || status=1
check fuzz/Cargo.lock || status=1
check benches/reference-shim/Cargo.lock ||
  echo "audit: the reference shim's check ended with status $? (reported, not failed on: see this script)"
exit "$status"
