#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# hub_inputs.sh — models named the way users have them: hub ids ORG/NAME[@REVISION] and cache
# repository folders resolve in a Hugging Face cache built here the way huggingface_hub lays it
# out (blobs/<sha256>, snapshots/<commit>/<file> as relative links into blobs/, refs/<branch>);
# an id or revision not in the cache, and a folder of PyTorch pickles, are refused naming what
# was looked for; a single-file base warns that no side file is copied.
. "$(dirname "$0")/lib.sh"
need_bin
need_gen

F=$TMP/fam
gen "$F" --tasks 2 --dtype bf16 --preset tiny --seed 17 --shard-size 200K
export HF_HUB_CACHE=$TMP/hub

# cache_model SRC_DIR ORG NAME COMMIT [REF]: lay SRC_DIR out as a cached repository
cache_model() {
    local src=$1 repo=$HF_HUB_CACHE/models--$2--$3 commit=$4 ref=${5:-main} f sha
    mkdir -p "$repo/blobs" "$repo/snapshots/$commit" "$repo/refs"
    for f in "$src"/*; do
        sha=$(sha256sum "$f" | cut -d' ' -f1)
        cp "$f" "$repo/blobs/$sha"
        ln -s "../../blobs/$sha" "$repo/snapshots/$commit/$(basename "$f")"
    done
    printf '%s' "$commit" >"$repo/refs/$ref"
}
C0=0123456789abcdef0123456789abcdef01234567
C1=89abcdef0123456789abcdef0123456789abcdef
C2=fedcba9876543210fedcba9876543210fedcba98
cache_model "$F/base" acme base $C0
cache_model "$F/task1" acme task-one $C1
cache_model "$F/task2" acme task.two $C2 v1.0

"$PCBM_BIN" merge --quiet --base "$F/base" --out "$TMP/ref" "$F/task1" "$F/task2" || fail "reference merge"

by_id() {
    "$PCBM_BIN" merge --quiet --base acme/base --out "$TMP/ids" acme/task-one "acme/task.two@v1.0" &&
        same_outputs "$TMP/ref" "$TMP/ids" pcbmerge.manifest.json README.md # the card names the inputs as given
}
check "hub ids resolve through refs/ (main and a tag)" by_id
by_commit_and_folder() {
    "$PCBM_BIN" merge --quiet --base "$HF_HUB_CACHE/models--acme--base" --out "$TMP/folders" \
        "acme/task-one@$C1" "$HF_HUB_CACHE/models--acme--task.two/snapshots/$C2" &&
        same_outputs "$TMP/ref" "$TMP/folders" pcbmerge.manifest.json README.md
}
# models--acme--task.two has no refs/main (only v1.0): its folder is named by snapshot here
check "a commit hash, a cache repository folder and a snapshot path" by_commit_and_folder

O=$TMP/never
expect_fail "an id not in the cache names the id and the place searched" \
    "acme/absent is neither a path nor in the local Hugging Face cache \(looked for $HF_HUB_CACHE/models--acme--absent" \
    "$PCBM_BIN" merge --base acme/base --out "$O" acme/absent
expect_fail "a revision not in the cache is named" "no revision 'v9'" \
    "$PCBM_BIN" merge --base acme/base@v9 --out "$O" acme/task-one
expect_fail "a cache folder without refs/main says how to name a revision" "no revision 'main'" \
    "$PCBM_BIN" merge --base "$HF_HUB_CACHE/models--acme--task.two" --out "$O" acme/task-one
HF_HUB_CACHE= HF_HOME=$TMP/hfhome expect_fail "HF_HOME/hub is searched when HF_HUB_CACHE is unset" \
    "looked for $TMP/hfhome/hub/models--acme--base" "$PCBM_BIN" merge --base acme/base --out "$O" acme/task-one

mkdir -p "$TMP/pickled"
cp "$F/base/config.json" "$TMP/pickled/"
head -c 4096 /dev/urandom >"$TMP/pickled/pytorch_model.bin"
expect_fail "a folder of PyTorch pickles is refused, saying how to convert" \
    "pickled/pytorch_model.bin: .*never loads.*safe_serialization=True" \
    "$PCBM_BIN" merge --base "$TMP/pickled" --out "$O" "$F/task1"

single_file_base() {
    mkdir -p "$TMP/single"
    "$PCBM_TOOLS/pcbm-gen" --quiet --out "$TMP/single" --tasks 1 --preset tiny --seed 18 || return 1
    local log
    log=$("$PCBM_BIN" merge --base "$TMP/single/base/model.safetensors" --out "$TMP/single/out" \
        "$TMP/single/task1" 2>&1) || { echo "    $log"; return 1; }
    grep -q "warning: the base .* is a single file: no config.json" <<<"$log" || { echo "    $log"; return 1; }
    [ ! -e "$TMP/single/out/config.json" ]
}
check "a single-file base warns that no side file is copied" single_file_base
finish
