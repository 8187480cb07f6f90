#!/bin/sh
# Copies the JavaScript SDK's compiled files (sdk/js/dist/*.js) into assets/sdk, where the
# console imports them from. Run by `go generate ./internal/controlplane/console` after a
# change to sdk/js; the copy is committed so that `go build` needs no Node. sdk_test.go
# fails when the copy and a fresh build of sdk/js differ.
#
# Reproducible: TypeScript's version is pinned by sdk/js/package-lock.json (npm ci), and the
# copy is exactly tsc's output, no bundler and no minifier.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
sdk="$here/../../../sdk/js"
cd "$sdk"
[ -x node_modules/.bin/tsc ] || npm ci --no-audit --no-fund
npm run build
rm -rf "$here/assets/sdk"
mkdir -p "$here/assets/sdk"
cp dist/*.js "$here/assets/sdk/"
cp LICENSE "$here/assets/sdk/LICENSE.txt"
echo "copied $(ls dist/*.js | wc -l) files of sdk/js/dist into $here/assets/sdk"
