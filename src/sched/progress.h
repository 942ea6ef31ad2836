/*
 * progress.h — the progress display of a pass on stderr (a terminal line or JSON lines). The
 * scheduler only starts it, adds the bytes it read and asks it to show itself; what is shown and
 * how often is decided here alone.
 */
#ifndef PCBM_PROGRESS_H
#define PCBM_PROGRESS_H

#include "../common/common.h"

typedef struct pcbm_progress_line {
    const char *pass;          /* the pass's name */
    double start, last;
    uint64_t total, done;      /* input bytes of the pass, and read so far */
    bool tty, json;
} pcbm_progress_line;

/* Start the display of pass `pass` (total input bytes) at time t0 (pcbm_now). */
void pcbm_progress_begin(pcbm_progress_line *pg, pcbm_progress mode, int quiet, const char *pass,
                         uint64_t total, double t0);
static inline void pcbm_progress_add(pcbm_progress_line *pg, uint64_t bytes) { pg->done += bytes; }
/* Show the line when it is due (rate-limited). */
void pcbm_progress_tick(pcbm_progress_line *pg);
/* End of the pass: the final line when it succeeded, else end the terminal line. */
void pcbm_progress_end(pcbm_progress_line *pg, bool ok);

#endif /* PCBM_PROGRESS_H */
