#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# run.sh — build the libFuzzer targets of the format layer (tests/fuzz/fuzz_*.c) with
# -fsanitize=fuzzer,address,undefined, seed them from tests/corpus, run each for $FUZZ_SECONDS
# seconds (default 60) with -max_len=65536; FUZZ_ONLY=header|json|index|tokenizer|recipe runs one
# target. The recipe target links the whole library (a recipe's options name the methods).
# Exits non-zero on a finding (the input is kept in build-fuzz/artifacts/). Grown corpora live
# in build-fuzz/corpus-NAME, never in tests/corpus.
set -euo pipefail
cd "$(dirname "$0")/../.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
OUT=${FUZZ_OUT:-build-fuzz}
CC_FUZZ=${CC_FUZZ:-clang}

if ! command -v "$CC_FUZZ" >/dev/null 2>&1; then
    echo "fuzz: $CC_FUZZ not found; install clang and libclang-rt-14-dev (tools/build/install-deps.sh fuzz)" >&2
    exit 2
fi
pkgs="jansson yajl libxxhash libzstd"
all_pkgs="liburing libzstd libxxhash jansson yajl gsl yaml-0.1"
cflags="-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -Wall -Wextra -Wshadow \
    -Wstrict-prototypes -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -Iinclude -Isrc $(pkg-config --cflags $pkgs)"
libs="$(pkg-config --libs $pkgs) -lm -pthread"
mkdir -p "$OUT/artifacts"

seed() { # seed NAME FILES...: copy seeds into the target's working corpus
    local dir="$OUT/corpus-$1"; shift
    mkdir -p "$dir"
    local f
    for f in "$@"; do
        [ -f "$f" ] && cp "$f" "$dir/seed-$(echo "$f" | tr '/' '_')"
    done
}
seed header tests/corpus/bad/* tests/corpus/good/* tests/corpus/index/*/*.safetensors
seed index tests/corpus/index/*/model.safetensors.index.json
seed tokenizer tests/corpus/tokenizer/*.json
seed recipe tests/corpus/recipe/*.yml
# fuzz_json seeds: 2-byte data length + the header JSON of every corpus file
mkdir -p "$OUT/corpus-json"
if [ -x /usr/bin/python3 ]; then
    /usr/bin/python3 - "$OUT/corpus-json" tests/corpus/bad/* tests/corpus/good/* \
        tests/corpus/index/*/*.safetensors <<'PY'
import os, struct, sys
out = sys.argv[1]
for i, p in enumerate(sys.argv[2:]):
    b = open(p, "rb").read()
    if len(b) < 8:
        continue
    n = struct.unpack("<Q", b[:8])[0]
    if 8 + n > len(b):
        continue
    data_len = (len(b) - 8 - n) & 0xFFFF
    open(os.path.join(out, "seed-%03d" % i), "wb").write(struct.pack("<H", data_len) + b[8:8 + n])
PY
fi

status=0
for src in tests/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    target=${name#fuzz_}
    bin="$OUT/$name"
    [ -n "${FUZZ_ONLY:-}" ] && [ "$target" != "$FUZZ_ONLY" ] && continue
    echo "fuzz: building $bin"
    if [ "$target" = recipe ]; then
        srcs=$(ls src/common/*.c src/format/*.c src/io/*.c src/sched/*.c src/stats/*.c \
            src/kernels/*.c src/merge/*.c src/writer/*.c src/search/*.c)
        tlibs="$(pkg-config --libs $all_pkgs) -lm -pthread"
        tflags="$cflags -Wno-unused-parameter $(pkg-config --cflags $all_pkgs)"
    else # the format layer without the recipe reader (which needs the merge methods)
        srcs=$(ls src/common/*.c src/format/*.c | grep -v '/recipe\.c$')
        tlibs=$libs
        tflags=$cflags
    fi
    # shellcheck disable=SC2086
    "$CC_FUZZ" $tflags -o "$bin" "$src" $srcs $tlibs
    mkdir -p "$OUT/corpus-$target"
    echo "fuzz: running $name for ${FUZZ_SECONDS}s"
    if "$bin" -max_total_time="$FUZZ_SECONDS" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -dict="tests/fuzz/$([ "$target" = recipe ] && echo recipe || echo safetensors).dict" -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$name-" "$OUT/corpus-$target" \
        >"$OUT/$name.log" 2>&1; then
        grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|Done [0-9]+ runs" \
            "$OUT/$name.log" | sed "s/^/fuzz: $name: /"
    else
        status=1
        echo "fuzz: $name FOUND A PROBLEM (log: $OUT/$name.log, input in $OUT/artifacts/):" >&2
        grep -A 30 -E "ERROR: |runtime error|deadly signal" "$OUT/$name.log" | head -40 >&2
    fi
done
[ "$status" -eq 0 ] && echo "fuzz: no findings"
exit "$status"
