#!/usr/bin/env bash
# Builds "N+1" for the rolling-upgrade test (issue 40): this tree as the release after it, with
# the next release string (VERSION's minor version plus one), the next cluster protocol and
# registry schema, and one internal call more (the DROVER_TEST_NEXT_RELEASE compilation
# condition: DroverVersion, SQLRegistry.testNextRelease, InternalCall.build). It is a debug build
# in a scratch path of its own, so it never mixes with the tree's own build.
# Usage: scripts/build-next-release.sh [SCRATCH]   (default .build-next); prints the folder of
# the programs.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=${1:-.build-next}
mkdir -p "$scratch"
IFS=. read -r major minor _ < VERSION
echo "$major.$((minor + 1)).0" > "$scratch/VERSION"
DROVER_TEST_NEXT_RELEASE=1 DROVER_TEST_VERSION_FILE="$PWD/$scratch/VERSION" \
    swift build --scratch-path "$scratch" >&2
echo "$PWD/$scratch/debug"
