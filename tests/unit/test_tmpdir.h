/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_tmpdir.h — a private directory under /tmp for a unit test, and its removal: shared by the
 * unit tests that write files.
 */
#ifndef PCBM_TEST_TMPDIR_H
#define PCBM_TEST_TMPDIR_H

#include <stdio.h>
#include <stdlib.h>

/* Create /tmp/pcbm-test-TAG.XXXXXX into dir; 0 on success. */
static inline int test_tmpdir_make(char *dir, size_t len, const char *tag)
{
    snprintf(dir, len, "/tmp/pcbm-test-%s.XXXXXX", tag);
    return mkdtemp(dir) ? 0 : -1;
}

/* Remove dir and everything in it; 0 on success. */
static inline int test_tmpdir_remove(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

#endif /* PCBM_TEST_TMPDIR_H */
