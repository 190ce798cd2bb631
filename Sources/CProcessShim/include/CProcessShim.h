// Process helpers that Swift's Glibc module does not expose (GNU extensions, fork/exec).
#ifndef SWITCHYARD_CPROCESS_SHIM_H
#define SWITCHYARD_CPROCESS_SHIM_H

#include <spawn.h>
#include <sys/types.h>

/// Asks posix_spawn to close every descriptor from `lowest` up in the child, so sockets of the
/// parent never leak into it. Returns 0 on success (and where the platform closes them by other means).
int syp_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest);

/// Starts `path` (an absolute or relative path, no PATH search) with `argv` and `envp` by fork and
/// exec. In the child: standard input is /dev/null; standard output and error are appended to
/// `output` (created 0600 when missing, never through a symbolic link; NULL for /dev/null); every
/// descriptor from 3 up is closed; the signal mask is empty and every handler the default; with
/// `new_process_group` it leads a process group of its own; with `parent_death_signal` > 0 it gets
/// that signal when the thread that started it exits (Linux; ignored elsewhere), and it does not
/// start at all if that parent is already gone. Only async-signal-safe calls run between fork and
/// exec. Returns the child's pid, or -errno when it could not start (an exec failure included).
pid_t syp_spawn(const char *path, char *const argv[], char *const envp[], const char *output, int new_process_group,
                int parent_death_signal);

/// The start time of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat), or -1
/// when there is no such process or it cannot be read (and on systems without /proc). With the pid
/// it names one process for good: a recycled pid has another start time.
long long syp_process_start_time(pid_t pid);

/// Waits up to `timeout_ms` (-1: for ever) for process `pid`, a child of this process, to exit,
/// without reaping it: 1 when it has exited, 0 on timeout, -1 where this cannot be done (no pidfd:
/// not Linux 5.3 or later), in which case the caller polls instead.
int syp_wait_exit(pid_t pid, int timeout_ms);

#endif
