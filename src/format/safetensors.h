/* SPDX-License-Identifier: Apache-2.0 */
/*
 * safetensors.h — the format layer: reading and validating safetensors checkpoints (single file,
 * or index + shards), dtype tables, and planning/serializing the output files the writer fills.
 * Internal to libpcbmerge; the public view is pcbm_model in pcbmerge.h.
 */
#ifndef PCBM_SAFETENSORS_H
#define PCBM_SAFETENSORS_H

#include "../common/arena.h"
#include "../common/common.h"

#define PCBM_ST_MAX_HEADER 100000000ull  /* the reference reader's limit on the header length */
#define PCBM_INDEX_NAME "model.safetensors.index.json"
#define PCBM_SINGLE_NAME "model.safetensors"

typedef struct pcbm_st_file {
    char *path;            /* full path */
    char *name;            /* file name inside the model directory */
    uint64_t size;         /* file size in bytes */
    uint64_t data_start;   /* 8 + header length */
    uint64_t header_hash;  /* xxh3-64 of the 8-byte length + header bytes */
} pcbm_st_file;

/* 56 bytes per tensor; its name and shape live in the arena of the header (then of the model). */
typedef struct pcbm_st_tensor {
    char *name;            /* in the arena */
    pcbm_dtype dtype;
    unsigned ndim;
    uint64_t *shape;       /* ndim entries in the arena (NULL when ndim == 0) */
    uint64_t numel;
    uint64_t nbytes;
    unsigned file;         /* index into files[] */
    uint64_t offset;       /* absolute offset in the file = data_start + begin */
} pcbm_st_tensor;

typedef struct pcbm_adapter pcbm_adapter; /* format/adapter.h */

struct pcbm_model {
    char *path;            /* as given */
    char *dir;             /* directory holding the files */
    pcbm_st_file *files;
    unsigned nfiles;
    pcbm_st_tensor *tensors;  /* model order: files in order, then by offset */
    size_t ntensors;
    uint64_t total_bytes;
    /* name -> tensor index (open addressing, linear probing on XXH3 of the name;
     * a slot holds index + 1, 0 = empty; map_cap is a power of two) */
    uint32_t *map;
    size_t map_cap;
    /* __metadata__ of the first file as alternating key/value strings; nmeta counts strings
     * (2 per pair), so (meta, nmeta) can be passed straight to pcbm_outlayout_build */
    char **meta;           /* strings in the arena */
    size_t nmeta;
    pcbm_arena arena;      /* tensor names and shapes, __metadata__ strings: no malloc each */
    uint64_t identity;     /* xxh3-64 over every file's header hash and size: the model's identity */
    bool is_dir;           /* opened as a model directory (side files live in dir) */
    pcbm_adapter *adapter; /* a PEFT LoRA adapter folder (its tensors are the adapter's), or NULL */
    unsigned nstaged;      /* the last nstaged files are pcbmerge's own work files (rows of
                              tensors indexed by token gathered to the output's vocabulary,
                              sched/vocab_stage.c), not the model's: no identity, no stat check */
};

/*
 * Output plan: the files a merge writes, with tensors in the given order, split into shards of at
 * most shard_bytes of tensor data (a tensor never spans two files; a tensor larger than the shard
 * size gets a file of its own). Headers are padded with spaces so that data begins at a multiple
 * of PCBM_ALIGN. One shard → "model.safetensors"; several → "model-0000i-of-0000N.safetensors"
 * plus an index.
 */
typedef struct pcbm_out_tensor {
    const char *name;      /* borrowed */
    pcbm_dtype dtype;
    unsigned ndim;
    const uint64_t *shape; /* borrowed */
    uint64_t nbytes;
    unsigned file;         /* filled by pcbm_outlayout_build */
    uint64_t offset;       /* absolute offset in its file; filled by pcbm_outlayout_build */
} pcbm_out_tensor;

typedef struct pcbm_out_file {
    char *name;            /* file name inside OUT */
    char *header;          /* 8-byte length + JSON + space padding: exactly data_start bytes */
    uint64_t data_start;   /* multiple of PCBM_ALIGN */
    uint64_t size;         /* data_start + data bytes */
    size_t first, count;   /* tensors [first, first+count) of the plan */
} pcbm_out_file;

typedef struct pcbm_outlayout {
    pcbm_out_tensor *tensors;
    size_t ntensors;
    pcbm_out_file *files;
    unsigned nfiles;
    uint64_t total_bytes;  /* sum of tensor bytes (index metadata.total_size) */
    uint64_t total_file_bytes; /* sum of file sizes */
    char *index_json;      /* NULL when there is a single file */
} pcbm_outlayout;

/* meta: alternating key/value strings for __metadata__, nmeta = number of strings (even);
 * "format":"pt" is always written first, so a "format" key in meta is skipped, as are repeated
 * keys (the first wins). shard_bytes 0 = everything in one file. The plan borrows `tensors`
 * (it fills their file/offset fields) and checks each nbytes against dtype × shape. */
pcbm_status pcbm_outlayout_build(pcbm_out_tensor *tensors, size_t n, uint64_t shard_bytes,
                               const char *const *meta, size_t nmeta, pcbm_outlayout *plan,
                               pcbm_error *err);
void pcbm_outlayout_free(pcbm_outlayout *plan);

/* Internal helpers shared with the writer and tests. */
const pcbm_st_tensor *pcbm_model_tensor_at(const pcbm_model *m, size_t i);
/* Bytes the model's tables hold: tensor table, arena (names, shapes, metadata), name map; about
 * 56 + name length + 8 x dims + 4-8 bytes per tensor. A merge charges them to its budget. */
uint64_t pcbm_model_table_bytes(const pcbm_model *m);
/* Free the tensor table, names, shapes, metadata and name map of m, keeping its files and
 * identity: a task model once the layout holds where its bytes are. */
void pcbm_model_drop_tensors(pcbm_model *m);

/* Copy the non-weight files users need beside the weights (config.json, generation_config.json,
 * tokenizer files, ...) from the base model directory into out_dir. */
pcbm_status pcbm_copy_side_files(const pcbm_model *base, const char *out_dir, pcbm_error *err);
/* config.json of out_dir (when there is one) describes the output: with a float dt, every
 * "torch_dtype" in it, nested configurations included, is set to torch's name of dt; with
 * `untied`, "tie_word_embeddings" is false (top level, and nested configurations that have the
 * key); with `dequantized` (FP8 weights of the base written as floats), "quantization_config"
 * is removed and a base dtype means BF16. Nothing else changes but the layout (two-space indent,
 * key order kept). */
pcbm_status pcbm_config_update(const char *out_dir, pcbm_dtype dt, bool untied, bool dequantized,
                               pcbm_error *err);
/* mergekit's `chat_template` (chat_template.c): NULL (keep the base's), "auto" (the template
 * most of the models share, ties to the one listed first) or a Jinja template's text (at least
 * 20 characters with a '{'); mergekit's named template files are refused. check: the rule;
 * apply: write the chosen template into OUT's tokenizer_config.json (and its chat_template.jinja
 * / .json when present), dirs the models' directories (NULL: none) in order, base first; `how`
 * says what was done (for the report). */
pcbm_status pcbm_chat_template_check(const char *spec, pcbm_error *err);
pcbm_status pcbm_chat_template_apply(const char *spec, const char *const *dirs, unsigned n,
                                     const char *out_dir, char *how, size_t howlen,
                                     pcbm_error *err);
/* The output's tokenizer from another model (mergekit's tokenizer_source: MODEL): the tokenizer
 * files of out_dir (tokenizer.json, tokenizer_config.json, special_tokens_map.json,
 * tokenizer.model, vocab.json, merges.txt, added_tokens.json) are removed and src_dir's copied. */
pcbm_status pcbm_copy_tokenizer_files(const char *src_dir, const char *out_dir, pcbm_error *err);
/* "vocab_size" of out_dir's config.json (top level, and nested configurations that have it) is
 * set to rows; nothing is done without a config.json. */
pcbm_status pcbm_config_set_vocab(const char *out_dir, uint64_t rows, pcbm_error *err);
/* Name of side file i (0, 1, ...), NULL past the last: the files pcbm_copy_side_files may copy. */
const char *pcbm_side_file_name(size_t i);

/* `j` as `path` (pcbm_write_file_simple): two-space indent, key order kept, 16 significant
 * digits, a final new line — the layout of the configuration files pcbmerge rewrites. */
struct json_t;
pcbm_status pcbm_write_json_file(const char *path, const struct json_t *j, pcbm_error *err);
/* Create (or truncate) `path`, write all `len` bytes, fsync, close. On failure the partial file
 * is removed and err names the path and offset (PCBM_ERR_NOSPACE when the disk is full). */
pcbm_status pcbm_write_file_simple(const char *path, const void *buf, size_t len, pcbm_error *err);

/* ---------------------------------------------------------------------------------------------
 * Parsing from memory (used by the reader, the fuzz targets and tests)
 * ------------------------------------------------------------------------------------------- */

/* One validated safetensors header: tensors sorted by data offset; each tensor's `file` is 0 and
 * its `offset` is absolute (data_start + begin). */
typedef struct pcbm_st_header {
    pcbm_st_tensor *tensors;
    size_t ntensors;
    char **meta;           /* __metadata__ as alternating key/value strings (nmeta strings) */
    size_t nmeta;
    pcbm_arena arena;      /* names, shapes and __metadata__ strings */
    uint64_t header_len;   /* N, the JSON length from the first 8 bytes */
    uint64_t data_start;   /* 8 + N */
    uint64_t data_bytes;   /* file size - data_start = sum of tensor bytes */
} pcbm_st_header;

/* Check the 8-byte length prefix against the file size: returns N in *header_len. `label` (the
 * file path) is what messages name. */
pcbm_status pcbm_st_check_prefix(const uint8_t prefix[8], uint64_t file_size, const char *label,
                                 uint64_t *header_len, pcbm_error *err);
/* Validate the N header bytes `json` of a file of `file_size` bytes and fill `out`. */
pcbm_status pcbm_st_parse_json(const char *json, size_t n, uint64_t file_size, const char *label,
                               pcbm_st_header *out, pcbm_error *err);
/* The same, fed in pieces (the reader streams a file's header through it in chunks): new, feed
 * as often as needed, finish. On an error (returned by feed or finish) the parser and `out` are
 * freed; abort frees both without finishing. `label` must outlive the parser. */
typedef struct pcbm_st_parser pcbm_st_parser;
pcbm_status pcbm_st_parser_new(uint64_t header_len, uint64_t file_size, const char *label,
                               pcbm_st_header *out, pcbm_st_parser **p, pcbm_error *err);
pcbm_status pcbm_st_parser_feed(pcbm_st_parser *p, const void *buf, size_t len, pcbm_error *err);
pcbm_status pcbm_st_parser_finish(pcbm_st_parser *p, pcbm_error *err);
void pcbm_st_parser_abort(pcbm_st_parser *p);
/* A whole file image in memory (file size = len): prefix + header + every rule. */
pcbm_status pcbm_st_parse_mem(const void *buf, size_t len, const char *label,
                              pcbm_st_header *out, pcbm_error *err);
/* Read and validate the header of the file at `path` (reads 8 + N bytes, never the data);
 * fills `file` (path, name = `name`, size, data_start, header_hash) and `out`. */
pcbm_status pcbm_st_read_file(const char *path, const char *name, pcbm_st_file *file,
                              pcbm_st_header *out, pcbm_error *err);
void pcbm_st_header_free(pcbm_st_header *h);
void pcbm_st_file_free(pcbm_st_file *f);

/* A parsed model.safetensors.index.json: shards in order of first appearance in weight_map,
 * entries in weight_map order. */
typedef struct pcbm_st_index {
    char **shards;
    unsigned nshards;
    char **names;          /* tensor names, weight_map order */
    unsigned *shard_of;    /* index into shards[] per name */
    size_t nnames;
} pcbm_st_index;

/* Does shard file `name` exist (as a regular file) beside the index? */
typedef bool (*pcbm_st_exists_fn)(const char *name, void *ctx);

/* 1 if `name` is a plain file name (not empty, ".", "..", no '/' or '\\'); else 0. */
int pcbm_st_plain_name(const char *name);
/* Validate index JSON text (label = its path in messages); `exists` may be NULL (no check). */
pcbm_status pcbm_st_index_parse(const char *json, size_t len, const char *label,
                                pcbm_st_exists_fn exists, void *ctx, pcbm_st_index *out,
                                pcbm_error *err);
void pcbm_st_index_free(pcbm_st_index *ix);

#endif /* PCBM_SAFETENSORS_H */
