/* SPDX-License-Identifier: Apache-2.0 */
/*
 * no-uring — run a command where io_uring is refused, as under Docker's default seccomp profile
 * (or gVisor, or kernel.io_uring_disabled=2): installs a seccomp filter that makes io_uring_setup,
 * io_uring_enter and io_uring_register fail with EPERM (or --errno ENOSYS), then execs CMD.
 *
 *   no-uring [--errno eperm|enosys] [--] CMD [ARGS...]
 *
 * Every other system call is allowed. The filter is inherited by CMD and its children and cannot
 * be removed. Exit status: CMD's (it replaces this process); 2 on usage errors; 77 when seccomp
 * filters are not available here (the test scripts' "skip" status); 127/126 when CMD cannot run.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#define NU_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NU_ARCH AUDIT_ARCH_AARCH64
#endif

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

static void usage(FILE *f)
{
    fputs("usage: no-uring [--errno eperm|enosys] [--] CMD [ARGS...]\n"
          "Runs CMD under a seccomp filter that makes io_uring_setup/enter/register fail with\n"
          "EPERM (default) or ENOSYS, as container runtimes do. Exit 77 if seccomp is unavailable.\n",
          f);
}

int main(int argc, char **argv)
{
    int err = EPERM;
    int i = 1;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--errno") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "eperm") || !strcmp(v, "EPERM"))
                err = EPERM;
            else if (!strcmp(v, "enosys") || !strcmp(v, "ENOSYS"))
                err = ENOSYS;
            else {
                fprintf(stderr, "no-uring: --errno is eperm or enosys, got %s\n", v);
                return 2;
            }
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "no-uring: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        } else {
            break;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "no-uring: no command given\n");
        usage(stderr);
        return 2;
    }
#ifndef NU_ARCH
    fprintf(stderr, "no-uring: no seccomp architecture constant for this machine\n");
    return 77;
#else
    unsigned ret_err = SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA);
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NU_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_enter, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_register, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, ret_err),
    };
    struct sock_fprog prog = {.len = (unsigned short)(sizeof f / sizeof f[0]), .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        fprintf(stderr, "no-uring: prctl(PR_SET_NO_NEW_PRIVS): %s\n", strerror(errno));
        return 77;
    }
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0 &&
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
        fprintf(stderr, "no-uring: cannot install a seccomp filter: %s\n", strerror(errno));
        return 77;
    }
    execvp(argv[i], &argv[i]);
    int e = errno;
    fprintf(stderr, "no-uring: cannot run %s: %s\n", argv[i], strerror(e));
    return e == ENOENT ? 127 : 126;
#endif
}
