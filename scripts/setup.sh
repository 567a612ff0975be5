#!/usr/bin/env bash
# Installs what building and testing boxoffice needs on a fresh machine. Idempotent: every step
# checks first, so a second run takes a second. Today that is the Rust toolchain's own tools;
# later parts of the product add their installs here.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
    echo "setup: cargo not found; install Rust (rustup) first" >&2
    exit 1
fi

# A C compiler builds the bundled C of zstd (sled) and mimalloc.
if ! need cc; then
    echo "setup: installing a C compiler"
    apt-get update -qq && apt-get install -y -qq gcc >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "setup: installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        echo "setup: adding the $component component"
        rustup component add "$component"
    fi
done
