#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# format_roundtrip.sh — files written by the format layer's output plan, checked by an independent
# reader (tests/reference/st_check.py): single-file and sharded models, dtype variety, exact bytes
# and decoded values; then both readers on the whole corpus (tests/corpus) must agree: every
# malformed input refused by both, every valid one read identically.
# Exit 0 = pass, 77 = skipped (reason on the last line), anything else = failure.
set -euo pipefail
ROOT=${PCBM_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$ROOT"
PY=/usr/bin/python3
skip() { echo "skip: $*"; exit 77; }
[ -x "$PY" ] || skip "$PY not found (install python3)"
"$PY" -c "import numpy" 2>/dev/null || skip "python3-numpy missing for $PY (apt-get install python3-numpy)"
command -v gcc >/dev/null || skip "gcc not found"
pkg-config --exists jansson yajl libxxhash 2>/dev/null || skip "jansson/yajl/xxhash development files missing"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pcbm-fmt-XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# ---- a tiny tool on top of src/format: "write DIR SHARD_BYTES" and "dump PATH" ----------------
cat >"$TMP/st_tool.c" <<'EOF'
#include "format/safetensors.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t wsum(const uint8_t *b, uint64_t n)
{
    uint64_t s = 0;
    for (uint64_t i = 0; i < n; i++) s += (i + 1) * b[i];
    return s;
}

static void print_line(const char *name, pcbm_dtype dt, unsigned ndim, const uint64_t *shape,
                       const char *file, uint64_t off, uint64_t nbytes, const uint8_t *data)
{
    printf("%s\t%s\t[", name, pcbm_dtype_name(dt));
    for (unsigned d = 0; d < ndim; d++) printf("%s%llu", d ? "," : "", (unsigned long long)shape[d]);
    const char *slash = strrchr(file, '/');
    printf("]\t%s\t%llu\t%llu\t%016llx\n", slash ? slash + 1 : file, (unsigned long long)off,
           (unsigned long long)nbytes, (unsigned long long)wsum(data, nbytes));
}

static const uint64_t s0[] = {64, 48}, s1[] = {48}, s2[] = {3, 5, 7}, s3[] = {1, 0},
                      s4[] = {300000}, s5[] = {4}, s6[] = {10};
static pcbm_out_tensor T[] = {
    {"model.embed.weight", PCBM_DT_BF16, 2, s0, 64 * 48 * 2, 0, 0},
    {"model.norm.weight", PCBM_DT_F32, 1, s1, 48 * 4, 0, 0},
    {"cube", PCBM_DT_F16, 3, s2, 105 * 2, 0, 0},
    {"empty", PCBM_DT_F32, 2, s3, 0, 0, 0},
    {"step", PCBM_DT_I64, 0, NULL, 8, 0, 0},
    {"big.u8", PCBM_DT_U8, 1, s4, 300000, 0, 0},
    {"bf16.known", PCBM_DT_BF16, 1, s5, 8, 0, 0},
    {"packed.f4", PCBM_DT_F4, 1, s6, 5, 0, 0},
};
#define NT (sizeof T / sizeof T[0])

static void fill(size_t t, uint8_t *b, uint64_t n)
{
    static const uint16_t known[] = {0x3f80, 0xc020, 0x3e20, 0x0000}; /* 1, -2.5, 0.15625, 0 */
    for (uint64_t i = 0; i < n; i++) b[i] = (uint8_t)(i * 131 + t * 17 + (i >> 8));
    if (strcmp(T[t].name, "bf16.known") == 0)
        for (int i = 0; i < 4; i++) { b[2 * i] = known[i] & 0xff; b[2 * i + 1] = known[i] >> 8; }
}

static int do_write(const char *dir, uint64_t shard)
{
    static const char *const meta[] = {"producer", "format_roundtrip.sh"};
    pcbm_outlayout p;
    pcbm_error err;
    if (pcbm_outlayout_build(T, NT, shard, meta, 2, &p, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    for (unsigned f = 0; f < p.nfiles; f++) {
        const pcbm_out_file *of = &p.files[f];
        uint8_t *buf = calloc(1, (size_t)of->size);
        memcpy(buf, of->header, (size_t)of->data_start);
        for (size_t i = of->first; i < of->first + of->count; i++) {
            fill(i, buf + T[i].offset, T[i].nbytes);
            print_line(T[i].name, T[i].dtype, T[i].ndim, T[i].shape, of->name, T[i].offset,
                       T[i].nbytes, buf + T[i].offset);
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, of->name);
        if (pcbm_write_file_simple(path, buf, (size_t)of->size, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        free(buf);
    }
    if (p.index_json) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, PCBM_INDEX_NAME);
        if (pcbm_write_file_simple(path, p.index_json, strlen(p.index_json), &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    }
    fprintf(stderr, "wrote %u file(s)\n", p.nfiles);
    pcbm_outlayout_free(&p);
    return 0;
}

static int do_dump(const char *path)
{
    pcbm_model *m;
    pcbm_error err;
    if (pcbm_model_open(path, &m, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    for (size_t i = 0; i < pcbm_model_num_tensors(m); i++) {
        pcbm_tensor_info ti;
        pcbm_model_tensor(m, i, &ti);
        uint8_t *b = malloc((size_t)ti.nbytes + 1);
        int fd = open(ti.file, O_RDONLY);
        if (fd < 0 || pread(fd, b, (size_t)ti.nbytes, (off_t)ti.offset) != (ssize_t)ti.nbytes) return 3;
        close(fd);
        print_line(ti.name, ti.dtype, ti.ndim, ti.shape, ti.file, ti.offset, ti.nbytes, b);
        free(b);
    }
    pcbm_model_close(m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "write") == 0) return do_write(argv[2], strtoull(argv[3], NULL, 10));
    if (argc == 3 && strcmp(argv[1], "dump") == 0) return do_dump(argv[2]);
    fprintf(stderr, "usage: st_tool write DIR SHARD_BYTES | dump PATH\n");
    return 2;
}
EOF
# shellcheck disable=SC2046
LIB=${BUILD:-build}/libpcbmerge.a
[ -f "$LIB" ] || skip "$LIB is not built"
SAN=""
case "$LIB" in *asan*) SAN="-fsanitize=address,undefined" ;; esac
# shellcheck disable=SC2046,SC2086
gcc -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra $SAN -Iinclude -Isrc $(pkg-config --cflags jansson yajl libxxhash) \
    -o "$TMP/st_tool" "$TMP/st_tool.c" "$LIB" \
    $(pkg-config --libs liburing libzstd libxxhash jansson yajl) -lm -pthread
CHECK="$PY tests/reference/st_check.py"
fail() { echo "FAIL: $*"; exit 1; }

# ---- written models: single file, sharded, one tensor per shard -------------------------------
for shard in 0 20000 1; do
    out="$TMP/model-$shard"
    mkdir "$out"
    "$TMP/st_tool" write "$out" "$shard" >"$TMP/expect-$shard.txt"
    $CHECK "$out" >"$TMP/check-$shard.txt" || fail "st_check refused the model written with shard size $shard"
    diff -u "$TMP/expect-$shard.txt" "$TMP/check-$shard.txt" || fail "st_check disagrees with what was written (shard $shard)"
    "$TMP/st_tool" dump "$out" >"$TMP/dump-$shard.txt" || fail "pcbm_model_open refused its own output (shard $shard)"
    diff -u "$TMP/expect-$shard.txt" "$TMP/dump-$shard.txt" || fail "reopened model differs (shard $shard)"
    files=$(ls "$out"/*.safetensors | wc -l)
    echo "ok: shard size $shard -> $files file(s), $(wc -l <"$TMP/expect-$shard.txt") tensors identical"
done
[ -f "$TMP/model-0/model.safetensors" ] || fail "single-file output is not model.safetensors"
[ -f "$TMP/model-1/model-00008-of-00008.safetensors" ] || fail "shard size 1 should give 8 shards"
"$PY" - "$TMP/model-20000" <<'EOF' || fail "index or header layout"
import json, os, struct, sys
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
assert list(idx) == ["metadata", "weight_map"], list(idx)
assert idx["metadata"]["total_size"] == 64*48*2 + 48*4 + 210 + 0 + 8 + 300000 + 8 + 5
for f in sorted(set(idx["weight_map"].values())):
    with open(os.path.join(d, f), "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        hdr = fh.read(n)
    assert (8 + n) % 4096 == 0, (f, n)
    h = json.loads(hdr)
    assert list(h)[0] == "__metadata__" and list(h["__metadata__"].items())[0] == ("format", "pt"), h
    assert h["__metadata__"]["producer"] == "format_roundtrip.sh"
print("ok: index total_size, weight_map, 4096-aligned headers, __metadata__ first")
EOF
vals=$($CHECK --values 4 "$TMP/model-0" | awk -F'\t' '$1 == "bf16.known" {print $7}')
[ "${vals#* }" = "1.0 -2.5 0.15625 0.0" ] || fail "bf16 values decoded by st_check: '$vals'"
echo "ok: bf16 values decode to 1.0 -2.5 0.15625 0.0"

# ---- both readers on the corpus -------------------------------------------------------------
nbad=0 ngood=0
for f in tests/corpus/bad/* tests/corpus/index/bad-*; do
    if $CHECK --quiet "$f" 2>/dev/null; then fail "st_check accepted malformed $f"; fi
    if "$TMP/st_tool" dump "$f" >/dev/null 2>&1; then fail "pcbm_model_open accepted malformed $f"; fi
    nbad=$((nbad + 1))
done
for f in tests/corpus/good/* tests/corpus/index/good-*; do
    $CHECK "$f" >"$TMP/a.txt" || fail "st_check refused valid $f"
    "$TMP/st_tool" dump "$f" >"$TMP/b.txt" || fail "pcbm_model_open refused valid $f"
    diff -u "$TMP/a.txt" "$TMP/b.txt" || fail "the readers disagree on $f"
    ngood=$((ngood + 1))
done
echo "ok: corpus: $nbad malformed inputs refused by both readers, $ngood valid read identically"
# ---- another writer: pcbm-gen's models (when it is built) read identically by both readers ----
GEN=${PCBM_TOOLS:-$ROOT/build/tools}/pcbm-gen
if [ -x "$GEN" ]; then
    "$GEN" --out "$TMP/gen" --tasks 1 --preset tiny --shard-size 64K --quiet >/dev/null 2>&1 ||
        fail "pcbm-gen could not write a tiny family"
    for m in base task1; do
        $CHECK "$TMP/gen/$m" >"$TMP/a.txt" || fail "st_check refused pcbm-gen's $m"
        "$TMP/st_tool" dump "$TMP/gen/$m" >"$TMP/b.txt" || fail "pcbm_model_open refused pcbm-gen's $m"
        diff -u "$TMP/a.txt" "$TMP/b.txt" || fail "the readers disagree on pcbm-gen's $m"
    done
    echo "ok: pcbm-gen family (sharded) read identically by both readers"
else
    echo "note: $GEN not built; pcbm-gen cross-check skipped"
fi
echo "format_roundtrip: PASS"
