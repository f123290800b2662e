#!/usr/bin/env bash
# Build the CO-RE probe objects reproducibly into package data and write probes.lock.json.
# Same sources + same clang = same bytes: no vmlinux.h dump of the build host (a minimal header
# of the types used is in include/), source paths mapped to ".", DWARF stripped (BTF kept).
set -euo pipefail
cd "$(dirname "$0")"
PROBES_DIR=$PWD
OUT_DIR=${STELLA_PROBES_OUT:-$PROBES_DIR/../stella_bundle/collector/bpf}
LOCKS=${STELLA_PROBES_LOCKS:-"$PROBES_DIR/probes.lock.json $OUT_DIR/probes.lock.json"}
CLANG=${CLANG:-clang}
STRIP=${LLVM_STRIP:-llvm-strip}
command -v "$CLANG" >/dev/null || { echo "build.sh: $CLANG not found (apt-get install clang llvm)" >&2; exit 2; }
command -v "$STRIP" >/dev/null || STRIP=$(ls /usr/bin/llvm-strip-* 2>/dev/null | head -1)

mkdir -p "$OUT_DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=0
for src in *.bpf.c; do
  obj=${src%.c}.o
  "$CLANG" -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Werror \
    -Iinclude -fdebug-prefix-map="$PROBES_DIR"=. -fno-ident \
    -c "$src" -o "$work/$obj"
  "$STRIP" -g "$work/$obj"
  install -m 0644 "$work/$obj" "$OUT_DIR/$obj"
done
clang_version=$("$CLANG" --version | head -1)
python3 -m stella_bundle.collector.lockfile "$OUT_DIR" $LOCKS --clang "$clang_version"
echo "build.sh: objects in $OUT_DIR, lock in $LOCKS" >&2
