#!/usr/bin/env bash
# Prepare the output of `hanoi247 init` for deploy/compose.yaml (development networks only).
#
#   deploy/compose-prepare.sh [NET_DIR]          # default: ./net
#
# `hanoi247 init` makes a loopback network: listeners on 127.0.0.1, directory endpoints
# 127.0.0.1:PORT, node certificates naming only localhost, 127.0.0.1 and ::1. In containers each
# node has its own address and reaches the others by service name (vn, fr, de), and a node checks
# that the host of a peer's endpoint is in the peer's certificate. So for every NET_DIR/<cc>/ this
# script writes NET_DIR/compose/<cc>/ with:
#
#   node.pem, node.key   a NEW node certificate from init's network CA (NET_DIR/network-ca.key),
#                        made with openssl as in certs/README.md ("With an external CA"), whose
#                        SANs are spiffe://<network>/node/<CC>, DNS:<cc> (the service name),
#                        DNS:localhost, IP:127.0.0.1 and IP:::1
#   node.toml            init's node.toml with the peer, desk and console listeners on 0.0.0.0
#                        (compose.yaml publishes desk and console on the host's loopback only; the
#                        metrics listener stays on the container's loopback), data_dir /var/lib/hanoi247
#                        (the container's data volume), network_ca and the directory in the same
#                        directory
#   directory.toml       init's signed directory with every member's endpoint host replaced by
#                        its service name and its certificate SHA-256 by the new certificate's,
#                        signed again with init's secretariat key (NET_DIR/secretariat.key) by
#                        `hanoi247 directory add` and `sign` (the binary: $HANOI247, else
#                        `hanoi247` on PATH, else target/release or target/debug of this checkout)
#   network-ca.pem, local-ca.pem, desk.pem, desk.key    copied from init's output
#   network-ca.crl, local-ca.crl                        the revocation lists, copied likewise
#                        (peer_crl points into the same directory)
#
# The desk certificate is kept: desk clients on the host reach the published desk port on
# 127.0.0.1, which it names, so init's <name>.client.toml files work unchanged.
#
# The private keys in NET_DIR/compose/ are mode 0600; certificates, CRLs and configs 0644. The
# image runs as the non-root uid 65532, which must own the keys: run as root, this script gives
# them to 65532; otherwise it says the one command to run (sudo chown). Or use your
# orchestrator's secrets; never put the network CA's key on a node.
# Needs: bash, openssl, awk.
set -euo pipefail

net=${1:-net}
if [[ ! -f $net/network-ca.pem || ! -f $net/network-ca.key ]]; then
    echo "$net has no network CA (network-ca.pem and .key): make it with 'hanoi247 init --out $net ...'" >&2
    exit 1
fi
command -v openssl >/dev/null || { echo "openssl is needed" >&2; exit 1; }
if [[ ! -f $net/directory.toml || ! -f $net/secretariat.key ]]; then
    echo "$net has no signed directory (directory.toml and secretariat.key): re-run 'hanoi247 init'" >&2
    exit 1
fi
bin=${HANOI247:-}
if [[ -z $bin ]]; then
    repo=$(cd "$(dirname "$0")/.." && pwd)
    for candidate in "$(command -v hanoi247 || true)" "$repo/target/release/hanoi247" "$repo/target/debug/hanoi247"; do
        if [[ -n $candidate && -x $candidate ]]; then bin=$candidate; break; fi
    done
fi
[[ -n $bin ]] || { echo "the hanoi247 binary is needed: set HANOI247 or run 'cargo build --release'" >&2; exit 1; }

# The value of `key = "..."` in section [section] of a TOML file.
section_value() {
    awk -v section="[$2]" -v key="$3" '/^[[:space:]]*\[/ { inside = ($0 == section) }
        inside && $0 ~ "^" key "[[:space:]]*=" { sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*$/, ""); print; exit }' "$1"
}

mkdir -p "$net/compose"
directory=$net/compose/directory.toml
cp "$net/directory.toml" "$directory"

# The quoted value of a top-level key of a node.toml.
top_value() {
    awk -v key="$2" '/^[[:space:]]*\[/ { exit } $0 ~ "^" key "[[:space:]]*=" {
        sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*$/, ""); print; exit }' "$1"
}

found=0
for config in "$net"/*/node.toml; do
    [[ -f $config ]] || continue
    found=1
    dir=$(dirname "$config")
    cc=$(basename "$dir")
    code=$(top_value "$config" code)
    network=$(top_value "$config" network)
    out=$net/compose/$cc
    mkdir -p "$out"

    # A new node key and certificate, signed by the network CA (certs/README.md).
    openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$out/node.key"
    openssl req -new -key "$out/node.key" -subj "/CN=hanoi247 node $code" -out "$out/node.csr"
    cat >"$out/node.ext" <<EXT
subjectAltName = URI:spiffe://$network/node/$code, DNS:$cc, DNS:localhost, IP:127.0.0.1, IP:::1
extendedKeyUsage = serverAuth, clientAuth
keyUsage = critical, digitalSignature
basicConstraints = critical, CA:FALSE
EXT
    openssl x509 -req -in "$out/node.csr" -CA "$net/network-ca.pem" -CAkey "$net/network-ca.key" \
        -CAcreateserial -CAserial "$net/compose/network-ca.srl" -days 365 -extfile "$out/node.ext" \
        -out "$out/node.pem" 2>/dev/null
    rm -f "$out/node.csr" "$out/node.ext"

    cp "$net/network-ca.pem" "$dir/local-ca.pem" "$dir/desk.pem" "$dir/desk.key" "$out/"
    # The revocation lists, where init made them (older networks have none).
    for crl in "$net/network-ca.crl" "$dir/local-ca.crl"; do
        if [[ -f $crl ]]; then cp "$crl" "$out/"; fi
    done

    # The container's node.toml: listeners on every interface, the data volume, service names.
    {
        echo "# Made by deploy/compose-prepare.sh from init's node.toml, for deploy/compose.yaml."
        awk '
        /^[[:space:]]*\[/ { section = $0 }
        /^data_dir[[:space:]]*=/ { print "data_dir = \"/var/lib/hanoi247\""; next }
        /^network_ca[[:space:]]*=/ { print "network_ca = \"network-ca.pem\""; next }
        /^peer_crl[[:space:]]*=/ { print "peer_crl = \"network-ca.crl\""; next }
        /^(peer|desk)[[:space:]]*=[[:space:]]*"127\.0\.0\.1:/ && section ~ /^\[listen\]/ { sub(/"127\.0\.0\.1:/, "\"0.0.0.0:"); print; next }
        /^listen[[:space:]]*=[[:space:]]*"127\.0\.0\.1:/ && section ~ /^\[console\]/ { sub(/"127\.0\.0\.1:/, "\"0.0.0.0:"); print; next }
        /^file[[:space:]]*=/ && section ~ /^\[directory\]/ { print "file = \"directory.toml\""; next }
        { print }
        ' "$config"
    } >"$out/node.toml"

    # Its directory entry: the service name and the new certificate.
    peer=$(section_value "$config" listen peer)
    "$bin" directory add --file "$directory" --code "$code" --name "24/7 point of contact $code" \
        --endpoint "$cc:${peer##*:}" --cert "$out/node.pem" --languages en --time-zone UTC >/dev/null

    chmod 0600 "$out"/*.key
    chmod 0644 "$out"/*.pem "$out/node.toml"
    if [[ $(id -u) == 0 ]]; then chown 65532:65532 "$out"/*.key; fi
    echo "$code: $out (node certificate names $cc, localhost, 127.0.0.1, ::1)"
done
if ((!found)); then
    echo "no */node.toml in $net" >&2
    exit 1
fi
"$bin" directory sign --file "$directory" --key "$net/secretariat.key"
for out in "$net"/compose/*/; do
    cp "$directory" "$out/directory.toml"
    chmod 0644 "$out/directory.toml"
done
if [[ $(id -u) != 0 ]]; then
    echo "the keys are mode 0600 and yours; the containers run as uid 65532: sudo chown 65532:65532 $net/compose/*/*.key"
fi
