#!/usr/bin/env bash
# Write an overlay's secret env files from the committed templates in secrets/*.secret.env.example,
# with a fresh random value for every @GENERATE@. The files are git-ignored and readable by
# their owner only; an existing file is kept (so credentials never change behind a running
# cluster's back).
#
# --rotate writes new values into the application credentials only (app.secret.env and
# api.secret.env): the setup Jobs apply those to MinIO and MongoDB when run again. The root
# accounts (MinIO, MongoDB, Grafana admin) are never rotated here: MongoDB and Grafana read
# theirs only when their volume is empty, so a new value in the Secret would lock the setup
# Job out. Changing them is a separate procedure (0_pipelines/deploy.md, "Rotate credentials").
#
# Usage: 1_infrastructure/k8s/gen-secrets.sh OVERLAY_DIR [--rotate]
#   e.g. 1_infrastructure/k8s/gen-secrets.sh 1_infrastructure/k8s/overlays/dev
set -euo pipefail

# the files --rotate rewrites: credentials the setup Jobs (re)apply
ROTATABLE="app.secret.env api.secret.env"

usage() {
  echo "usage: $0 OVERLAY_DIR [--rotate]" >&2
  exit 2
}

[ "$#" -ge 1 ] && [ "$#" -le 2 ] || usage
overlay=$1
mode=${2:-}
if [ "$mode" = "--force" ]; then
  echo "error: --force is gone (it changed the root passwords, which MongoDB and Grafana apply only to an empty volume): use --rotate for the application credentials; root accounts: 0_pipelines/deploy.md, \"Rotate credentials\"" >&2
  exit 2
fi
[ -z "$mode" ] || [ "$mode" = "--rotate" ] || usage
[ -f "$overlay/kustomization.yaml" ] || { echo "error: $overlay has no kustomization.yaml" >&2; exit 2; }

templates="$(cd "$(dirname "$0")" && pwd)/secrets"
umask 077
mkdir -p "$overlay/secrets"

# 24 letters and digits (base64 of 18 random bytes, + and / mapped to letters: about 141
# bits): safe inside URIs, env files and command lines (never a leading "-") without quoting,
# and short enough that each value stays within 52 bytes: kustomize writes longer values'
# base64 with line breaks, which the API server stores without, so every later
# `kubectl apply` would patch the Secret again (tests/unit/test_k8s_platform.py)
random_value() {
  head -c 18 /dev/urandom | base64 | tr '+/' 'xy'
}

for template in "$templates"/*.secret.env.example; do
  name=$(basename "$template" .example)
  target="$overlay/secrets/$name"
  if [ -e "$target" ]; then
    case " $ROTATABLE " in
      *" $name "*) [ "$mode" = "--rotate" ] || { echo "kept      $target"; continue; } ;;
      *) echo "kept      $target"; continue ;;
    esac
  fi
  tmp=$(mktemp "$overlay/secrets/.$name.XXXXXX")
  while IFS= read -r line || [ -n "$line" ]; do
    # comments keep the marker: they explain it
    while [[ "$line" != \#* && "$line" == *@GENERATE@* ]]; do
      line=${line/@GENERATE@/$(random_value)}
    done
    printf '%s\n' "$line"
  done < "$template" > "$tmp"
  verb=generated
  [ ! -e "$target" ] || verb=rotated
  mv "$tmp" "$target"
  echo "$verb $target"
done
