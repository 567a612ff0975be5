#!/usr/bin/env bash
# The whole test suite, as CI runs it: setup, formatting, lints, then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# CI builds once: incremental caches would only add to target/ on its disk.
if [[ -n ${CI:-} ]]; then export CARGO_INCREMENTAL=0; fi

./scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --profile ci
