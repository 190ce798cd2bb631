// The event loop under HTTPClient: libcurl's multi_socket API on epoll (Linux) or kqueue
// (macOS). libcurl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when its next
// timeout is due (CURLMOPT_TIMERFUNCTION); we wait for exactly those and hand each ready socket to
// curl_multi_socket_action, so only the transfers on that socket run. The same poller watches a
// wake-up channel (an eventfd, or an EVFILT_USER event) that other threads trigger when they have
// new work. Everything here runs on the loop's thread except sy_curl_loop_wake.
#include "CCurlShim.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/epoll.h>
#include <sys/eventfd.h>
#elif defined(__APPLE__)
#include <sys/event.h>
#else
#error "sy_curl_loop needs epoll or kqueue"
#endif

/// At most this many ready events are taken from one wait; the rest come with the next.
enum { SY_MAX_EVENTS = 64 };

struct sy_curl_loop {
    CURLM *multi;
    /// The epoll or kqueue descriptor.
    int poller;
#if defined(__linux__)
    /// An eventfd in the epoll set; sy_curl_loop_wake adds 1, the loop reads it back to 0.
    int wake;
#endif
    /// When curl's timer is due (CLOCK_MONOTONIC, ns), or -1 when it has none.
    int64_t deadline;
    /// While the loop waits in the poller: when it will wake by itself (ns; INT64_MAX when only
    /// an event wakes it). -1 while it is awake.
    int64_t sleep_until;
    /// What the last sy_curl_loop_poll found, for sy_curl_loop_dispatch.
    int ready_count;
#if defined(__linux__)
    struct epoll_event ready[SY_MAX_EVENTS];
#else
    struct kevent ready[SY_MAX_EVENTS];
#endif
};

static int64_t sy_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

// CURLMOPT_SOCKETFUNCTION: curl says what it wants to know about one socket. `what` is the
// union over every transfer on the socket (several on one HTTP/2 connection).
static int sy_socket_callback(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
    (void)easy;
    (void)socketp;
    sy_curl_loop *loop = userp;
#if defined(__linux__)
    if (what == CURL_POLL_REMOVE) {
        // Fails harmlessly when the socket was closed already (the kernel dropped it then).
        epoll_ctl(loop->poller, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    struct epoll_event event = {0};
    event.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
    event.data.fd = s;
    // MOD first, as a socket is mostly changed rather than new; ENOENT covers a new socket and a
    // descriptor number reused after curl closed the socket that had it.
    if (epoll_ctl(loop->poller, EPOLL_CTL_MOD, s, &event) != 0 && errno == ENOENT) {
        if (epoll_ctl(loop->poller, EPOLL_CTL_ADD, s, &event) != 0) return -1;
    }
#else
    // kqueue keeps one filter per direction. Deleting one that is not there fails with ENOENT,
    // which is fine; each change goes alone so that one failure does not skip the other.
    struct kevent change;
    EV_SET(&change, s, EVFILT_READ, (what & CURL_POLL_IN) ? EV_ADD : EV_DELETE, 0, 0, NULL);
    if (kevent(loop->poller, &change, 1, NULL, 0, NULL) != 0 && (what & CURL_POLL_IN)) return -1;
    EV_SET(&change, s, EVFILT_WRITE, (what & CURL_POLL_OUT) ? EV_ADD : EV_DELETE, 0, 0, NULL);
    if (kevent(loop->poller, &change, 1, NULL, 0, NULL) != 0 && (what & CURL_POLL_OUT)) return -1;
#endif
    return 0;
}

// CURLMOPT_TIMERFUNCTION: curl wants curl_multi_socket_action(CURL_SOCKET_TIMEOUT) after
// `timeout_ms` (0: as soon as possible, but not from inside this callback), or never (-1).
static int sy_timer_callback(CURLM *multi, long timeout_ms, void *userp) {
    (void)multi;
    sy_curl_loop *loop = userp;
    loop->deadline = timeout_ms < 0 ? -1 : sy_now_ns() + (int64_t)timeout_ms * 1000000;
    return 0;
}

sy_curl_loop *sy_curl_loop_create(CURLM *multi) {
    sy_curl_loop *loop = calloc(1, sizeof(sy_curl_loop));
    if (!loop) return NULL;
    loop->multi = multi;
    loop->deadline = -1;
    loop->sleep_until = -1;
#if defined(__linux__)
    loop->poller = epoll_create1(EPOLL_CLOEXEC);
    loop->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event event = {0};
    event.events = EPOLLIN;
    event.data.fd = loop->wake;
    if (loop->poller < 0 || loop->wake < 0 || epoll_ctl(loop->poller, EPOLL_CTL_ADD, loop->wake, &event) != 0) {
        if (loop->poller >= 0) close(loop->poller);
        if (loop->wake >= 0) close(loop->wake);
        free(loop);
        return NULL;
    }
#else
    loop->poller = kqueue();
    struct kevent change;
    EV_SET(&change, 0, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, NULL);
    if (loop->poller < 0 || kevent(loop->poller, &change, 1, NULL, 0, NULL) != 0) {
        if (loop->poller >= 0) close(loop->poller);
        free(loop);
        return NULL;
    }
#endif
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, sy_socket_callback);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, loop);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, sy_timer_callback);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, loop);
    return loop;
}

void sy_curl_loop_destroy(sy_curl_loop *loop) {
    close(loop->poller);
#if defined(__linux__)
    close(loop->wake);
#endif
    free(loop);
}

void sy_curl_loop_wake(sy_curl_loop *loop) {
#if defined(__linux__)
    uint64_t one = 1;
    // Fails only when the counter is near 2^64, that is, a wake-up is pending anyway.
    ssize_t written = write(loop->wake, &one, sizeof one);
    (void)written;
#else
    struct kevent change;
    EV_SET(&change, 0, EVFILT_USER, 0, NOTE_TRIGGER, 0, NULL);
    kevent(loop->poller, &change, 1, NULL, 0, NULL);
#endif
}

int sy_curl_loop_timers(sy_curl_loop *loop) {
    if (loop->deadline < 0 || sy_now_ns() < loop->deadline) return 0;
    loop->deadline = -1;
    int running = 0;
    curl_multi_socket_action(loop->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    return 1;
}

int sy_curl_loop_prepare_wait(sy_curl_loop *loop, int block, int max_wait_ms) {
    if (!block) {
        loop->sleep_until = -1;
        return 0;
    }
    int64_t now = sy_now_ns();
    int64_t until = max_wait_ms < 0 ? INT64_MAX : now + (int64_t)max_wait_ms * 1000000;
    if (loop->deadline >= 0 && loop->deadline < until) until = loop->deadline;
    loop->sleep_until = until;
    if (until == INT64_MAX) return -1;
    // Rounded up: waking before the deadline would only wait again.
    int64_t left = until - now;
    return left <= 0 ? 0 : (int)((left + 999999) / 1000000);
}

int sy_curl_loop_needs_wake(sy_curl_loop *loop) {
    return loop->sleep_until >= 0 && loop->deadline >= 0 && loop->deadline < loop->sleep_until;
}

int sy_curl_loop_poll(sy_curl_loop *loop, int wait_ms) {
    int woken = 0;
#if defined(__linux__)
    int n = epoll_wait(loop->poller, loop->ready, SY_MAX_EVENTS, wait_ms);
    if (n < 0) {
        loop->ready_count = 0;
        return errno == EINTR ? 0 : -1;
    }
    // The wake-up is read here, so the events left for dispatch are sockets only.
    int kept = 0;
    for (int i = 0; i < n; i++) {
        if (loop->ready[i].data.fd == loop->wake) {
            uint64_t count;
            ssize_t got = read(loop->wake, &count, sizeof count);
            (void)got;
            woken = 1;
        } else {
            loop->ready[kept++] = loop->ready[i];
        }
    }
    loop->ready_count = kept;
#else
    struct timespec timeout = {wait_ms / 1000, (long)(wait_ms % 1000) * 1000000};
    int n = kevent(loop->poller, NULL, 0, loop->ready, SY_MAX_EVENTS, wait_ms < 0 ? NULL : &timeout);
    if (n < 0) {
        loop->ready_count = 0;
        return errno == EINTR ? 0 : -1;
    }
    int kept = 0;
    for (int i = 0; i < n; i++) {
        if (loop->ready[i].filter == EVFILT_USER) {
            woken = 1;  // EV_CLEAR: reading the event reset it
        } else {
            loop->ready[kept++] = loop->ready[i];
        }
    }
    loop->ready_count = kept;
#endif
    return woken;
}

void sy_curl_loop_dispatch(sy_curl_loop *loop) {
    loop->sleep_until = -1;
    int running = 0;
    for (int i = 0; i < loop->ready_count; i++) {
#if defined(__linux__)
        uint32_t ready = loop->ready[i].events;
        // A hang-up is reported as readable so that curl reads and meets the end or the error.
        int flags = ((ready & (EPOLLIN | EPOLLHUP)) ? CURL_CSELECT_IN : 0) | ((ready & EPOLLOUT) ? CURL_CSELECT_OUT : 0)
                    | ((ready & EPOLLERR) ? CURL_CSELECT_ERR : 0);
        curl_socket_t s = loop->ready[i].data.fd;
#else
        int flags = loop->ready[i].filter == EVFILT_READ ? CURL_CSELECT_IN : CURL_CSELECT_OUT;
        if (loop->ready[i].flags & EV_EOF) flags |= CURL_CSELECT_IN;
        curl_socket_t s = (curl_socket_t)loop->ready[i].ident;
#endif
        // A socket closed since the poll (by an earlier action here) is unknown to curl, which
        // then does nothing.
        curl_multi_socket_action(loop->multi, s, flags, &running);
    }
    loop->ready_count = 0;
    sy_curl_loop_timers(loop);
}
