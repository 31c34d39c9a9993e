#!/usr/bin/env bash
# Pin an overlay's ipsp-* images by digest, so every node runs exactly the image that was
# built and tested (a tag such as ipsp-app:0.1.0 is reused across rebuilds; with
# imagePullPolicy IfNotPresent a node keeps whichever build it pulled first). Writes the
# overlay's images/kustomization.yaml, a kustomize Component the overlay lists under
# `components:`; its entries also rewrite the Spark executors' image (SPARK_IMAGE) and the
# images the Spark driver admission policy allows. Commit the result.
#
# Usage:
#   1_infrastructure/k8s/pin-images.sh OVERLAY_DIR NAME=REPOSITORY@sha256:DIGEST ...
#       e.g. ipsp-app=registry.example.com/ipsp/ipsp-app@sha256:4f1c...
#   1_infrastructure/k8s/pin-images.sh OVERLAY_DIR --docker REGISTRY/PREFIX [TAG]
#       reads the digests of the pushed images REGISTRY/PREFIX/NAME:TAG from the local
#       Docker engine (`docker image inspect`, RepoDigests); TAG defaults to the project version
set -euo pipefail

NAMES="ipsp-spark ipsp-spark-gpu ipsp-app ipsp-train ipsp-grafana"

die() {
  echo "error: $*" >&2
  exit 2
}

[ "$#" -ge 2 ] || die "usage: $0 OVERLAY_DIR NAME=REPOSITORY@sha256:DIGEST ... | OVERLAY_DIR --docker REGISTRY/PREFIX [TAG]"
overlay=$1
shift
[ -f "$overlay/kustomization.yaml" ] || die "$overlay has no kustomization.yaml"

refs=()
if [ "$1" = "--docker" ]; then
  [ "$#" -ge 2 ] || die "--docker needs the registry prefix the images were pushed to"
  prefix=${2%/}
  tag=${3:-}
  if [ -z "$tag" ]; then
    root="$(cd "$(dirname "$0")/../.." && pwd)"
    tag=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/pyproject.toml" | head -n 1)
  fi
  command -v docker > /dev/null || die "docker not found (or pass NAME=REPOSITORY@sha256:DIGEST arguments)"
  for name in $NAMES; do
    image="$prefix/$name:$tag"
    digests=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$image" 2> /dev/null) || continue
    digest=$(printf '%s\n' "$digests" | sed -n "s|^$prefix/$name@\(sha256:[0-9a-f]*\)$|\1|p" | head -n 1)
    [ -n "$digest" ] || die "$image has no digest from $prefix: push it first (docker push $image)"
    refs+=("$name=$prefix/$name@$digest")
  done
  [ "${#refs[@]}" -gt 0 ] || die "no image $prefix/ipsp-*:$tag found in the local Docker engine"
else
  refs=("$@")
fi

body=""
seen=" "
for ref in "${refs[@]}"; do
  [[ "$ref" =~ ^([a-z0-9-]+)=([a-z0-9][a-z0-9._/:-]*)@(sha256:[0-9a-f]{64})$ ]] ||
    die "'$ref' is not NAME=REPOSITORY@sha256:<64 hex digits>"
  name=${BASH_REMATCH[1]}
  repository=${BASH_REMATCH[2]}
  digest=${BASH_REMATCH[3]}
  case " $NAMES " in *" $name "*) ;; *) die "$name is not an image this project builds ($NAMES)" ;; esac
  case "$seen" in *" $name "*) die "$name is given twice" ;; esac
  seen="$seen$name "
  body+="  - name: $name"$'\n'"    newName: $repository"$'\n'"    digest: $digest"$'\n'
done

mkdir -p "$overlay/images"
tmp=$(mktemp "$overlay/images/.kustomization.XXXXXX")
{
  echo "# Written by 1_infrastructure/k8s/pin-images.sh: the images this overlay runs, by digest."
  echo "apiVersion: kustomize.config.k8s.io/v1alpha1"
  echo "kind: Component"
  echo
  echo "images:"
  printf '%s' "$body"
} > "$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$overlay/images/kustomization.yaml"
echo "pinned ${#refs[@]} image(s) in $overlay/images/kustomization.yaml"
