#!/usr/bin/env bash
# Check what `make demo` / `make test` need from the machine before minutes of work
# fail late. One line per missing thing, with the command that installs it.
# Usage: prereqs.sh demo|test   (exit 1 when something is missing)
set -uo pipefail
goal=${1:-demo}
missing=0
say() { echo "missing: $*" >&2; missing=1; }

version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

py=${PYTHON:-python3}
if ! command -v "$py" >/dev/null 2>&1; then
  say "Python 3.11+ ($py not found): apt-get install -y python3 python3-venv"
else
  pv=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  version_ge "$pv" 3.11 || say "Python 3.11+ ($py is $pv)"
  "$py" -c 'import venv, ensurepip' 2>/dev/null || say "Python venv module: apt-get install -y python3-venv"
fi

if ! command -v java >/dev/null 2>&1; then
  say "Java 17+ (Kafka, S3 server, Spark): apt-get install -y openjdk-17-jre-headless"
else
  jv=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
  version_ge "${jv:-0}" 17 || say "Java 17+ (found ${jv:-unknown})"
fi
command -v mvn >/dev/null 2>&1 || say "Maven 3.8+ (fetches the Kafka, S3 server and Spark connector jars): apt-get install -y maven"
if ! command -v go >/dev/null 2>&1; then
  say "Go 1.24+ (builds FerretDB, the MongoDB-compatible server): install Go from your distribution or go.dev"
else
  gv=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
  version_ge "${gv:-0}" 1.24 || say "Go 1.24+ (found ${gv:-unknown})"
fi

if [ "$goal" = test ]; then
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || say "Chromium (the report test renders the HTML report headless): apt-get install -y chromium"
  command -v openssl >/dev/null 2>&1 || say "openssl (certificates of the test Kubernetes API server): apt-get install -y openssl"
fi

[ "$missing" = 0 ] || { echo "prerequisites missing for 'make $goal' (see above); .ci/run installs them on Debian" >&2; exit 1; }
