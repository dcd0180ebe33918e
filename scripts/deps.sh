#!/usr/bin/env bash
# The Debian packages the build and the tests need, installed when missing (a fresh machine
# has none of them): libtss2-dev and pkg-config (custos-tpm builds against the TPM Software
# Stack); SoftHSM2 (the PKCS#11 token of the firmware-signing tests); swtpm, swtpm-tools and
# tpm2-tools (the software TPMs, and the tools that judge the attestation verifier); jq, curl
# and openssl (README's walkthrough, which the README check runs).
set -euo pipefail
need=()
pkg-config --exists tss2-esys 2>/dev/null || need+=(libtss2-dev pkg-config)
[ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v swtpm >/dev/null || need+=(swtpm)
command -v swtpm_setup >/dev/null || need+=(swtpm-tools)
command -v tpm2_quote >/dev/null || need+=(tpm2-tools)
for c in jq curl openssl; do command -v "$c" >/dev/null || need+=("$c"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || {
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  }
fi
