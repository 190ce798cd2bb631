#define _GNU_SOURCE
#include "CHiredisShim.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t syr_now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

// Waits for `fd` to become ready for `events` or the wake-up pipe to be written to. A ready
// socket wins over a wake-up, so a reply that has fully arrived is not thrown away.
static int syr_wait(int fd, short events, int wake_fd, int timeout_ms) {
    struct pollfd p[2];
    p[0].fd = fd;
    p[0].events = events;
    p[0].revents = 0;
    p[1].fd = wake_fd;
    p[1].events = POLLIN;
    p[1].revents = 0;
    nfds_t n = wake_fd >= 0 ? 2 : 1;
    int64_t deadline = timeout_ms < 0 ? -1 : syr_now_ms() + timeout_ms;
    int wait_ms = timeout_ms;
    for (;;) {
        int r = poll(p, n, wait_ms);
        if (r < 0) {
            if (errno != EINTR) return SYR_IO;
            if (deadline >= 0) {
                wait_ms = (int)(deadline - syr_now_ms());
                if (wait_ms <= 0) return SYR_TIMEOUT;
            }
            continue;
        }
        if (r == 0) return SYR_TIMEOUT;
        if (p[0].revents) return SYR_OK;  // readable, writable, or hung up: let the caller find out
        if (n == 2 && (p[1].revents & POLLIN)) return SYR_CANCELLED;
        return SYR_OK;
    }
}

int syr_prepare(redisContext *c) {
    // Non-blocking: hiredis then treats EAGAIN as "try again" and the poll loop above does the
    // waiting, so writes honour the call's timeout and cancellation too. Close-on-exec: a child
    // process (redis-server, a model server) must not inherit the socket and keep it open.
    int flags = fcntl(c->fd, F_GETFL);
    if (flags < 0 || fcntl(c->fd, F_SETFL, flags | O_NONBLOCK) < 0) return SYR_IO;
    if (fcntl(c->fd, F_SETFD, FD_CLOEXEC) < 0) return SYR_IO;
    c->flags &= ~REDIS_BLOCK;
    return SYR_OK;
}

int syr_flush(redisContext *c, int wake_fd, int timeout_ms) {
    int done = 0;
    while (!done) {
        if (redisBufferWrite(c, &done) != REDIS_OK) return c->err == REDIS_ERR_EOF ? SYR_EOF : SYR_IO;
        if (!done) {
            int w = syr_wait(c->fd, POLLOUT, wake_fd, timeout_ms);
            if (w != SYR_OK) return w;
        }
    }
    return SYR_OK;
}

int syr_read_reply(redisContext *c, int wake_fd, int timeout_ms, void **reply) {
    *reply = NULL;
    for (;;) {
        if (redisGetReplyFromReader(c, reply) != REDIS_OK) return SYR_PROTOCOL;
        if (*reply != NULL) return SYR_OK;
        int w = syr_wait(c->fd, POLLIN, wake_fd, timeout_ms);
        if (w != SYR_OK) return w;
        if (redisBufferRead(c) != REDIS_OK) return c->err == REDIS_ERR_EOF ? SYR_EOF : SYR_IO;
    }
}

int syr_peer_closed(redisContext *c) {
    if (c == NULL || c->err) return 1;
    char b;
    ssize_t r = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0) return 1;  // orderly shutdown by the server
    if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : 1;
    return 1;  // bytes nobody asked for: the stream is out of step, start again
}

int syr_wake_pipe(int fds[2]) {
#if defined(__linux__)
    return pipe2(fds, O_NONBLOCK | O_CLOEXEC);
#else
    if (pipe(fds) != 0) return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    return 0;
#endif
}

void syr_wake(int write_fd) {
    char b = 1;
    ssize_t r = write(write_fd, &b, 1);
    (void)r;  // a full pipe already wakes the reader
}

void syr_drain(int read_fd) {
    char buf[64];
    while (read(read_fd, buf, sizeof buf) > 0) {
    }
}

void syr_close(int fd) { close(fd); }

int syr_sleep(int wake_fd, int ms) {
    struct pollfd p;
    p.fd = wake_fd;
    p.events = POLLIN;
    p.revents = 0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int left = ms;
    while (left > 0) {
        int r = poll(&p, 1, left);
        if (r > 0) return SYR_CANCELLED;
        if (r == 0) return SYR_OK;
        if (errno != EINTR) return SYR_IO;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t spent = (int64_t)(now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        left = ms - (int)spent;
    }
    return SYR_OK;
}
