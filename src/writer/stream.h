/*
 * stream.h — the output stream (work in progress: sizing only).
 */
#ifndef PCBM_STREAM_H
#define PCBM_STREAM_H

#include "../common/common.h"

#define PCBM_OSTREAM_CHUNKS 4u         /* output staging buffers */

/* Bytes of each staging buffer for blocks of `block_out_bytes` output bytes. */
uint64_t pcbm_ostream_chunk_size(uint64_t block_out_bytes);

#endif /* PCBM_STREAM_H */
