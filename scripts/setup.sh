#!/usr/bin/env bash
# Installs what building and testing boxoffice needs on a fresh machine. Idempotent: every step
# checks first, so a second run takes a second. The Rust toolchain's own tools, a C compiler,
# from Debian's packages the build tools of librdkafka, the bench's baselines (PostgreSQL, Redis),
# the headless browser that checks its HTML report (Chromium) and the PDF and QR readers of the
# ticket tests; from PyPI the tests' SMTP server; the tansu broker and the tests' S3 server.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
    echo "setup: cargo not found; install Rust (rustup) first" >&2
    exit 1
fi

# Debian packages, each with the file that shows it is there:
# - gcc builds the bundled C of zstd (sled) and mimalloc;
# - postgresql and redis-server are the bench's baselines (scripts/baselines.sh starts them);
# - chromium opens the bench's HTML report in a test;
# - openssl makes the certificates of the TLS test;
# - cmake builds the librdkafka that the rdkafka crate bundles (the order-event relay), and its
#   2.12 sources include curl/curl.h even when built without curl (rust-rdkafka issue 829), so
#   the header package is needed too.
missing=()
need cc || missing+=(gcc)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
need redis-server || missing+=(redis-server)
need chromium || missing+=(chromium)
need openssl || missing+=(openssl)
need cmake || missing+=(cmake)
need c++ || missing+=(g++)
compgen -G "/usr/include/*/curl/curl.h" >/dev/null || [[ -f /usr/include/curl/curl.h ]] ||
    missing+=(libcurl4-openssl-dev)
# - poppler-utils (pdftotext, pdftoppm) and zbar-tools (zbarimg) read the ticket PDFs back in the
#   tests: their text, and each page's QR code decoded from a rendered image.
need pdftoppm || missing+=(poppler-utils)
need zbarimg || missing+=(zbar-tools)
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
# Debian starts the packaged servers as services where it can; the bench starts its own on other
# ports, so the packaged ones are left as Debian set them up.

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

# The SMTP server of the email adapter's tests (scripts/smtp.sh starts it): aiosmtpd from PyPI,
# pinned, into the site-packages of the python3 on PATH.
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    echo "setup: installing aiosmtpd (the tests' SMTP server)"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        aiosmtpd==1.4.6
fi

# The Kafka-protocol broker of the tests, the bench and a local run: tansu, built from crates.io
# once (7 to 20 minutes on 2 cores) into a cache outside the checkout ($XDG_CACHE_HOME, else
# ~/.cache), pinned, with its memory and SQLite storage engines. scripts/broker.sh starts it.
tansu_version=0.6.0
tansu_root=${XDG_CACHE_HOME:-$HOME/.cache}/boxoffice/tansu-$tansu_version
if [[ ! -x $tansu_root/bin/tansu ]]; then
    echo "setup: building the tansu $tansu_version broker into $tansu_root (once; minutes)"
    cargo install --quiet --locked tansu --version "$tansu_version" --features dynostore,libsql \
        --root "$tansu_root"
fi

# The S3-compatible server of the ticket-file tests (scripts/s3.sh starts it): s3s-fs, a real S3
# server over a directory that checks SigV4 signatures, built from crates.io once (about 3 minutes
# on 2 cores) into the same cache, pinned: 0.14.1 is its last release that builds with Rust 1.95
# (0.15 asks for 1.96). Keep the version in step with scripts/s3.sh.
s3s_version=0.14.1
s3s_root=${XDG_CACHE_HOME:-$HOME/.cache}/boxoffice/s3s-fs-$s3s_version
if [[ ! -x $s3s_root/bin/s3s-fs ]]; then
    echo "setup: building the s3s-fs $s3s_version S3 server into $s3s_root (once; minutes)"
    cargo install --quiet --locked s3s-fs --version "$s3s_version" --features binary \
        --root "$s3s_root"
fi
