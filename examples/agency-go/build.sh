#!/bin/sh
# Builds agency-go from the protos with Debian's packages only, offline:
#
#     ./build.sh [OUT]        # OUT defaults to ./build (git ignores it)
#
# Needs golang-go, golang-google-grpc-dev, golang-google-protobuf-dev (nothing else pulls it in),
# protobuf-compiler, protoc-gen-go and protoc-gen-go-grpc (Debian 12). The generated Go code goes to OUT/gopath/src/<import path>,
# never into the source tree; the program is OUT/agency-go. Go builds in GOPATH mode with
# Debian's /usr/share/gocode second on GOPATH, so nothing is fetched from a module proxy.
#
# Exit status 77 (with the reason on stderr) when a tool or package is missing; anything else
# non-zero is a failed build.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
proto_root=${PROTO_ROOT:-$here/../../proto}
out=${1:-$here/build}
gocode=${GOCODE:-/usr/share/gocode}
# The Go package the generated code lands in. The M options below name it for every proto, so
# the build does not depend on (and is not changed by) any go_package option in the files.
package=hanoi247.example/agency-go/hanoi247v1
protos="hanoi247/v1/envelope.proto hanoi247/v1/desk.proto"

missing=""
for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
for dir in google.golang.org/grpc google.golang.org/protobuf; do
  [ -d "$gocode/src/$dir" ] || missing="$missing $gocode/src/$dir"
done
# google/protobuf/timestamp.proto ships with protobuf-compiler (libprotobuf-dev elsewhere).
well_known=""
for dir in /usr/include /usr/local/include; do
  if [ -f "$dir/google/protobuf/timestamp.proto" ]; then well_known=$dir; break; fi
done
[ -n "$well_known" ] || missing="$missing google/protobuf/timestamp.proto"
if [ -n "$missing" ]; then
  echo "build.sh: missing:$missing (apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev protobuf-compiler protoc-gen-go protoc-gen-go-grpc)" >&2
  exit 77
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
gopath=$out/gopath
rm -rf "$gopath/src/$package"
mkdir -p "$gopath/src"
mappings=""
for proto in $protos; do
  mappings="$mappings --go_opt=M$proto=$package --go-grpc_opt=M$proto=$package"
done
# shellcheck disable=SC2086 # $mappings and $protos are word lists on purpose
protoc -I"$proto_root" -I"$well_known" \
  --go_out="$gopath/src" --go-grpc_out="$gopath/src" $mappings $protos

export GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:$gocode"
# Go wants a build cache; without a home (some CI runners) it goes next to the output.
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ]; then
  export GOCACHE="$out/go-cache"
fi
cd "$here"
go build -o "$out/agency-go" ./main.go
echo "built $out/agency-go"
