#!/usr/bin/env bash
# Run a hanoi247 network on this machine, one `hanoi247 node` process per node, until Ctrl-C.
#
#   deploy/local-network.sh [--base-port P] [--nodes VN,FR,DE] [--network NAME] [DIR]
#
# DIR (default: ./net) is a directory made by `hanoi247 init`. When it holds no network yet, this
# script makes one first: `hanoi247 init --out DIR --nodes VN,FR,DE --base-port P` (P default
# 7247: VN peer 7247 / desk 7248, FR 7257 / 7258, DE 7267 / 7268; metrics at +2).
# It then starts every DIR/*/node.toml as `hanoi247 node --config DIR/<cc>/node.toml`, logs in
# DIR/<cc>/node.log, waits until every node's desk port accepts TCP connections (and, when its
# metrics listener is on this machine, until `/readyz` says 200), and prints a line "ready".
# (The desk probe opens and closes a TCP connection without TLS, which each node logs once as a
# WARN "TLS handshake refused ... tls handshake eof": expected, harmless.)
# Ctrl-C or SIGTERM stops every node with SIGTERM (each stops accepting, finishes in-flight
# calls and flushes its store) and waits for them; the script exits 0 when all of them exited 0.
# If a node exits on its own, the script stops the others and exits 1.
#
# The binary: $HANOI247_BIN, else `hanoi247` on PATH, else target/release/hanoi247 of this
# repository (`cargo build --release`).
#
# Environment: HANOI247_READY_TIMEOUT (seconds, default 30) bounds the wait for "ready";
# HANOI247_STOP_TIMEOUT (seconds, default 30) bounds the graceful stop before SIGKILL.
# Needs bash 4+ (arrays, /dev/tcp).
set -euo pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }

base_port=7247
nodes=VN,FR,DE
network=hanoi247-dev
dir=
while (($#)); do
    case "$1" in
        --base-port) base_port=${2:?--base-port needs a value}; shift 2 ;;
        --nodes) nodes=${2:?--nodes needs a value}; shift 2 ;;
        --network) network=${2:?--network needs a value}; shift 2 ;;
        -h | --help) usage 0 ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *) [[ -z $dir ]] || usage; dir=$1; shift ;;
    esac
done
dir=${dir:-net}
ready_timeout=${HANOI247_READY_TIMEOUT:-30}
stop_timeout=${HANOI247_STOP_TIMEOUT:-30}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -n ${HANOI247_BIN:-} ]]; then
    bin=$HANOI247_BIN
elif command -v hanoi247 >/dev/null 2>&1; then
    bin=$(command -v hanoi247)
else
    bin=$repo/target/release/hanoi247
fi
if [[ ! -x $bin ]]; then
    echo "no hanoi247 binary at $bin: run 'cargo build --release' or set HANOI247_BIN" >&2
    exit 1
fi

if [[ ! -e $dir/network-ca.pem ]]; then
    echo "making a network in $dir: $bin init --out $dir --nodes $nodes --base-port $base_port"
    "$bin" init --out "$dir" --network "$network" --nodes "$nodes" --base-port "$base_port" >/dev/null
fi

configs=()
for config in "$dir"/*/node.toml; do
    [[ -f $config ]] && configs+=("$config")
done
if ((${#configs[@]} == 0)); then
    echo "no */node.toml in $dir (is it a directory made by 'hanoi247 init'?)" >&2
    exit 1
fi

# The value of `key` in `[section]` ("" for the top level) of a node.toml (a quoted string), or
# nothing.
toml_value() {
    local file=$1 section=$2 key=$3
    awk -v section="$section" -v key="$key" '
        /^[[:space:]]*\[/ { current = $0; gsub(/[[:space:]]|\[|\]/, "", current); next }
        current == section && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
            sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*$/, ""); print; exit
        }' "$file"
}

# host:port -> "host port", with an unspecified listen address (0.0.0.0, ::) reached on loopback.
split_address() {
    local address=$1 host port
    port=${address##*:}
    host=${address%:*}
    host=${host#[}
    host=${host%]}
    case "$host" in 0.0.0.0) host=127.0.0.1 ;; ::) host=::1 ;; esac
    echo "$host $port"
}

# True when something accepts TCP connections at host port.
accepts() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# True when the metrics listener at host port answers GET /readyz with 200.
readyz() {
    local status
    status=$(
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf 'GET /readyz HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" >&3
        IFS= read -r -t 2 line <&3 || exit 1
        echo "$line"
    ) 2>/dev/null || return 1
    [[ $status == "HTTP/1."?" 200"* ]]
}

codes=()
pids=()
stopping=0
sleeper=

# SIGTERM to every node still running, wait for each (SIGKILL past the stop timeout), then exit:
# with $1 (default 0), or 1 when a node did not exit 0.
stop() {
    ((stopping)) && return
    stopping=1
    trap '' INT TERM
    local i pid status failed=${1:-0} deadline=$((SECONDS + stop_timeout))
    [[ -z $sleeper ]] || kill "$sleeper" 2>/dev/null || true
    echo "stopping ${codes[*]}"
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for i in "${!pids[@]}"; do
        pid=${pids[$i]}
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "${codes[$i]} did not stop within ${stop_timeout}s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        status=0
        wait "$pid" 2>/dev/null || status=$?
        if ((status == 0)); then
            echo "${codes[$i]} stopped"
        else
            echo "${codes[$i]} exited with status $status (log: ${logs[$i]})" >&2
            failed=1
        fi
    done
    exit "$failed"
}
trap 'stop 0' INT TERM

logs=()
for config in "${configs[@]}"; do
    node_dir=$(dirname "$config")
    code=$(toml_value "$config" "" code)
    [[ -n $code ]] || code=$(basename "$node_dir" | tr '[:lower:]' '[:upper:]')
    log=$node_dir/node.log
    "$bin" node --config "$config" >>"$log" 2>&1 &
    codes+=("$code")
    pids+=("$!")
    logs+=("$log")
done

# Wait, within the deadline, until every node listens (and reports ready where it can be asked).
deadline=$((SECONDS + ready_timeout))
for i in "${!configs[@]}"; do
    config=${configs[$i]}
    desk=$(toml_value "$config" listen desk)
    read -r desk_host desk_port <<<"$(split_address "${desk:-127.0.0.1:7248}")"
    metrics=$(toml_value "$config" metrics listen)
    read -r metrics_host metrics_port <<<"$(split_address "${metrics:-127.0.0.1:9247}")"
    until accepts "$desk_host" "$desk_port" &&
        { [[ $metrics_host != 127.* && $metrics_host != ::1 && $metrics_host != localhost ]] ||
            readyz "$metrics_host" "$metrics_port"; }; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "${codes[$i]} exited before it was ready; last lines of ${logs[$i]}:" >&2
            tail -n 20 "${logs[$i]}" >&2
            stop 1
        fi
        if ((SECONDS >= deadline)); then
            echo "${codes[$i]} not ready within ${ready_timeout}s (desk $desk_host:$desk_port); see ${logs[$i]}" >&2
            stop 1
        fi
        sleep 0.1
    done
    echo "${codes[$i]} pid ${pids[$i]} desk $desk_host:$desk_port log ${logs[$i]}"
done
echo "ready"

# Watch the nodes until a signal comes (the trap runs stop) or one of them exits on its own.
while true; do
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            status=0
            wait "${pids[$i]}" 2>/dev/null || status=$?
            echo "${codes[$i]} exited on its own with status $status; last lines of ${logs[$i]}:" >&2
            tail -n 20 "${logs[$i]}" >&2
            unset 'pids[i]' 'codes[i]'
            stop 1
        fi
    done
    # `wait` on a background sleep returns at once when a signal arrives, so Ctrl-C is prompt.
    sleep 1 >/dev/null 2>&1 &
    sleeper=$!
    wait "$sleeper" || true
done
