#define _GNU_SOURCE
#include "CProcessShim.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__linux__)
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

int syp_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
#else
    (void)actions;
    (void)lowest;
    return 0;  // Darwin: POSIX_SPAWN_CLOEXEC_DEFAULT is set by the caller instead
#endif
}

static void close_from(int lowest, int keep) {
#if defined(__linux__) && defined(SYS_close_range)
    // close_range(2) keeps nothing in between, so close around the one descriptor to keep.
    if (keep >= lowest) {
        if (keep > lowest) syscall(SYS_close_range, (unsigned)lowest, (unsigned)(keep - 1), 0);
        if (syscall(SYS_close_range, (unsigned)(keep + 1), ~0U, 0) == 0) return;
    } else if (syscall(SYS_close_range, (unsigned)lowest, ~0U, 0) == 0) {
        return;
    }
#endif
    struct rlimit limit;
    long max = getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY ? (long)limit.rlim_cur : sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > (1L << 20)) max = 1L << 20;
    for (int fd = lowest; fd < max; fd++) {
        if (fd != keep) close(fd);
    }
}

pid_t syp_spawn(const char *path, char *const argv[], char *const envp[], const char *output, int new_process_group,
                int parent_death_signal) {
    // The child reports a failure before exec through this pipe; a successful exec closes it.
    int report[2];
#if defined(__linux__)
    if (pipe2(report, O_CLOEXEC) != 0) return -errno;
#else
    if (pipe(report) != 0) return -errno;
    fcntl(report[0], F_SETFD, FD_CLOEXEC);
    fcntl(report[1], F_SETFD, FD_CLOEXEC);
#endif
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int saved = errno;
        close(report[0]);
        close(report[1]);
        return -saved;
    }
    if (pid == 0) {
        int failure = 0;
#if defined(__linux__)
        if (parent_death_signal > 0) {
            if (prctl(PR_SET_PDEATHSIG, parent_death_signal) != 0) failure = errno;
            // The parent died between fork and prctl: nobody would ever stop this child.
            if (!failure && getppid() != parent) _exit(127);
        }
#else
        (void)parent;
        (void)parent_death_signal;
#endif
        if (!failure && new_process_group && setpgid(0, 0) != 0) failure = errno;
        if (!failure) {
            struct sigaction dfl;
            memset(&dfl, 0, sizeof dfl);
            dfl.sa_handler = SIG_DFL;
            for (int sig = 1; sig < NSIG; sig++) {
                if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
            }
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
        }
        if (!failure) {
            int in = open("/dev/null", O_RDONLY);
            int out = output ? open(output, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0600) : open("/dev/null", O_WRONLY);
            if (in < 0 || out < 0) {
                failure = errno;
            } else if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) {
                failure = errno;
            }
        }
        if (!failure) {
            close_from(3, report[1]);
            execve(path, argv, envp);
            failure = errno;
        }
        ssize_t ignored = write(report[1], &failure, sizeof failure);
        (void)ignored;
        _exit(127);
    }
    close(report[1]);
    int failure = 0;
    ssize_t n;
    do {
        n = read(report[0], &failure, sizeof failure);
    } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof failure && failure != 0) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        return -failure;
    }
    return pid;
}

long long syp_process_start_time(pid_t pid) {
#if defined(__linux__)
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *file = fopen(path, "re");
    if (!file) return -1;
    char buffer[1024];
    size_t length = fread(buffer, 1, sizeof buffer - 1, file);
    fclose(file);
    buffer[length] = 0;
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    char *p = strrchr(buffer, ')');
    if (!p) return -1;
    p++;
    // Fields 3 to 21, then the start time (22).
    for (int field = 3; field <= 21; field++) {
        p = strchr(p + 1, ' ');
        if (!p) return -1;
    }
    return strtoll(p + 1, NULL, 10);
#else
    (void)pid;
    return -1;
#endif
}

int syp_wait_exit(pid_t pid, int timeout_ms) {
#if defined(__linux__) && defined(SYS_pidfd_open)
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) return -1;
    struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    close(fd);
    if (r < 0) return -1;
    return r > 0 ? 1 : 0;
#else
    (void)pid;
    (void)timeout_ms;
    return -1;
#endif
}
