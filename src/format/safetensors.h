/*
 * safetensors.h — the format layer: reading and validating safetensors checkpoints (single file,
 * or index + shards), dtype tables, and planning/serializing the output files the writer fills.
 * Internal to libpcbmerge; the public view is pcbm_model in pcbmerge.h.
 */
#ifndef PCBM_SAFETENSORS_H
#define PCBM_SAFETENSORS_H

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

typedef struct pcbm_st_tensor {
    char *name;
    pcbm_dtype dtype;
    unsigned ndim;
    uint64_t *shape;       /* ndim entries (NULL when ndim == 0) */
    uint64_t numel;
    uint64_t nbytes;
    unsigned file;         /* index into files[] */
    uint64_t offset;       /* absolute offset in the file = data_start + begin */
} pcbm_st_tensor;

struct pcbm_model {
    char *path;            /* as given */
    char *dir;             /* directory holding the files */
    pcbm_st_file *files;
    unsigned nfiles;
    pcbm_st_tensor *tensors;  /* model order: files in order, then by offset */
    size_t ntensors;
    uint64_t total_bytes;
    /* name -> tensor index (open addressing) */
    uint32_t *map;
    size_t map_cap;
    /* __metadata__ of the first file as alternating key/value strings */
    char **meta;
    size_t nmeta;
    uint64_t identity;     /* xxh3-64 over every file's header hash and size: the model's identity */
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
    unsigned file;         /* filled by pcbm_outplan_build */
    uint64_t offset;       /* absolute offset in its file; filled by pcbm_outplan_build */
} pcbm_out_tensor;

typedef struct pcbm_out_file {
    char *name;            /* file name inside OUT */
    char *header;          /* 8-byte length + JSON + space padding: exactly data_start bytes */
    uint64_t data_start;   /* multiple of PCBM_ALIGN */
    uint64_t size;         /* data_start + data bytes */
    size_t first, count;   /* tensors [first, first+count) of the plan */
} pcbm_out_file;

typedef struct pcbm_outplan {
    pcbm_out_tensor *tensors;
    size_t ntensors;
    pcbm_out_file *files;
    unsigned nfiles;
    uint64_t total_bytes;  /* sum of tensor bytes (index metadata.total_size) */
    uint64_t total_file_bytes; /* sum of file sizes */
    char *index_json;      /* NULL when there is a single file */
} pcbm_outplan;

/* meta: alternating key/value strings for __metadata__ ("format":"pt" is always added first). */
pcbm_status pcbm_outplan_build(pcbm_out_tensor *tensors, size_t n, uint64_t shard_bytes,
                               const char *const *meta, size_t nmeta, pcbm_outplan *plan,
                               pcbm_error *err);
void pcbm_outplan_free(pcbm_outplan *plan);

/* Internal helpers shared with the writer and tests. */
const pcbm_st_tensor *pcbm_model_tensor_at(const pcbm_model *m, size_t i);

/* Copy the non-weight files users need beside the weights (config.json, generation_config.json,
 * tokenizer files, ...) from the base model directory into out_dir. */
pcbm_status pcbm_copy_side_files(const pcbm_model *base, const char *out_dir, pcbm_error *err);

#endif /* PCBM_SAFETENSORS_H */
