/*
 * stream.c — the output stream (work in progress: sizing only).
 */
#include "stream.h"

#define STAGE_CHUNK_MAX (4u << 20)
#define STAGE_CHUNK_MIN (64u << 10)

uint64_t pcbm_ostream_chunk_size(uint64_t block_out_bytes)
{
    uint64_t c = PCBM_MIN(STAGE_CHUNK_MAX, pcbm_align_up(block_out_bytes, PCBM_ALIGN));
    return PCBM_MAX(c, STAGE_CHUNK_MIN);
}
