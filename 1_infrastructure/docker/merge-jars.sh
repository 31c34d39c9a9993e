#!/usr/bin/env bash
# Add Maven-resolved jars to Spark's jars folder, keeping the jars Spark already ships.
#
# Usage: merge-jars.sh MAVEN_REPO_LAYOUT_DIR SPARK_JARS_DIR
#
# The first folder is the output of `mvn dependency:copy-dependencies
# -Dmdep.useRepositoryLayout=true`, so each jar sits in <group path>/<artifactId>/<version>/.
# A jar is copied only when Spark has no jar of the same artifactId: two versions of one
# library on the classpath (say scala-library 2.13.15 next to Spark's 2.13.18) fail at run
# time in ways that are hard to trace, and Spark's own versions are the tested ones.
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: $0 MAVEN_REPO_LAYOUT_DIR SPARK_JARS_DIR" >&2
  exit 2
fi
deps_dir=$1
spark_jars=$2
[ -d "$deps_dir" ] || { echo "not a folder: $deps_dir" >&2; exit 2; }
[ -d "$spark_jars" ] || { echo "not a folder: $spark_jars" >&2; exit 2; }

added=0
kept=0
while IFS= read -r -d '' jar; do
  version_dir=$(dirname "$jar")
  artifact=$(basename "$(dirname "$version_dir")")
  if compgen -G "$spark_jars/$artifact-[0-9]*.jar" > /dev/null; then
    kept=$((kept + 1))
  else
    cp "$jar" "$spark_jars/"
    echo "added $(basename "$jar")"
    added=$((added + 1))
  fi
done < <(find "$deps_dir" -name '*.jar' -type f -print0 | sort -z)

echo "merge-jars: $added added, $kept already shipped by Spark"
if [ "$added" -eq 0 ]; then
  echo "merge-jars: nothing added; is $deps_dir the Maven output?" >&2
  exit 1
fi
