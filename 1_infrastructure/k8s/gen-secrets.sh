#!/usr/bin/env bash
# Write an overlay's secret env files from the committed templates in secrets/*.secret.env.example,
# with a fresh random value for every @GENERATE@. The files are git-ignored and readable by
# their owner only; an existing file is kept (so credentials never change behind a running
# cluster's back) unless --force is given.
#
# Usage: 1_infrastructure/k8s/gen-secrets.sh OVERLAY_DIR [--force]
#   e.g. 1_infrastructure/k8s/gen-secrets.sh 1_infrastructure/k8s/overlays/dev
set -euo pipefail

usage() {
  echo "usage: $0 OVERLAY_DIR [--force]" >&2
  exit 2
}

[ "$#" -ge 1 ] && [ "$#" -le 2 ] || usage
overlay=$1
force=${2:-}
[ -z "$force" ] || [ "$force" = "--force" ] || usage
[ -f "$overlay/kustomization.yaml" ] || { echo "error: $overlay has no kustomization.yaml" >&2; exit 2; }

templates="$(cd "$(dirname "$0")" && pwd)/secrets"
umask 077
mkdir -p "$overlay/secrets"

# 32 hex characters (128 bits): safe inside URIs and env files without any quoting
random_value() {
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
}

for template in "$templates"/*.secret.env.example; do
  name=$(basename "$template" .example)
  target="$overlay/secrets/$name"
  if [ -e "$target" ] && [ "$force" != "--force" ]; then
    echo "kept      $target"
    continue
  fi
  tmp=$(mktemp "$overlay/secrets/.$name.XXXXXX")
  while IFS= read -r line || [ -n "$line" ]; do
    # comments keep the marker: they explain it
    while [[ "$line" != \#* && "$line" == *@GENERATE@* ]]; do
      line=${line/@GENERATE@/$(random_value)}
    done
    printf '%s\n' "$line"
  done < "$template" > "$tmp"
  mv "$tmp" "$target"
  echo "generated $target"
done
