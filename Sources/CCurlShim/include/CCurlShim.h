// Typed wrappers for libcurl's variadic entry points.
//
// curl_easy_setopt, curl_easy_getinfo and curl_multi_setopt take `...`, which Swift cannot call.
// Each wrapper fixes the type of the third argument; pick the one that matches the option's
// documented type (long, string, pointer, curl_off_t, callback).
#ifndef SWITCHYARD_CCURL_SHIM_H
#define SWITCHYARD_CCURL_SHIM_H

#include <curl/curl.h>

static inline CURLcode sy_curl_easy_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode sy_curl_easy_setopt_string(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode sy_curl_easy_setopt_pointer(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode sy_curl_easy_setopt_off_t(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode sy_curl_easy_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode sy_curl_easy_setopt_write_callback(CURL *h, CURLoption o, curl_write_callback v) {
    return curl_easy_setopt(h, o, v);
}
static inline CURLcode sy_curl_easy_setopt_xferinfo_callback(CURL *h, CURLoption o, curl_xferinfo_callback v) {
    return curl_easy_setopt(h, o, v);
}

static inline CURLcode sy_curl_easy_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode sy_curl_easy_getinfo_double(CURL *h, CURLINFO i, double *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode sy_curl_easy_getinfo_string(CURL *h, CURLINFO i, char **v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode sy_curl_easy_getinfo_off_t(CURL *h, CURLINFO i, curl_off_t *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode sy_curl_easy_getinfo_pointer(CURL *h, CURLINFO i, void **v) { return curl_easy_getinfo(h, i, v); }

static inline CURLMcode sy_curl_multi_setopt_long(CURLM *m, CURLMoption o, long v) { return curl_multi_setopt(m, o, v); }
static inline CURLMcode sy_curl_multi_setopt_pointer(CURLM *m, CURLMoption o, void *v) { return curl_multi_setopt(m, o, v); }

/// The version string of the libcurl that is linked, for example "libcurl/7.88.1 OpenSSL/3.0.x ...".
const char *sy_curl_version(void);

/// 1 when the linked libcurl was built with the named feature (CURL_VERSION_HTTP2, CURL_VERSION_LIBZ, ...).
int sy_curl_has_feature(int feature_bit);

/// The event loop under HTTPClient (loop.c): libcurl's multi_socket API on epoll (Linux) or
/// kqueue (macOS), with curl's socket and timer callbacks and a wake-up channel. Every function but
/// sy_curl_loop_poll and sy_curl_loop_wake drives curl, so calls to them (and to curl on the same
/// multi handle) must be serialized by the caller; sy_curl_loop_poll is for the loop's own thread
/// and only waits; sy_curl_loop_wake may be called from any thread at any time.
typedef struct sy_curl_loop sy_curl_loop;

/// Makes the poller and the wake-up channel and sets `multi`'s CURLMOPT_SOCKETFUNCTION and
/// CURLMOPT_TIMERFUNCTION to feed them. NULL when the system refuses (errno says why).
sy_curl_loop *sy_curl_loop_create(CURLM *multi);

/// Closes the poller and the wake-up channel. Call after curl_multi_cleanup, which may still call
/// the socket and timer callbacks.
void sy_curl_loop_destroy(sy_curl_loop *loop);

/// Makes a waiting (or the next) sy_curl_loop_poll return at once.
void sy_curl_loop_wake(sy_curl_loop *loop);

/// Runs curl_multi_socket_action(CURL_SOCKET_TIMEOUT) when curl's timer is due (as it is at once
/// after curl_multi_add_handle, which is how a new transfer starts). 1 when it ran, else 0.
int sy_curl_loop_timers(sy_curl_loop *loop);

/// Before sy_curl_loop_poll: how long it may wait, in ms (-1: until an event), which is until
/// curl's timer, at most `max_wait_ms` (-1: no bound), or 0 when `block` is 0. Records the time
/// for sy_curl_loop_needs_wake; the loop counts as asleep until sy_curl_loop_dispatch.
int sy_curl_loop_prepare_wait(sy_curl_loop *loop, int block, int max_wait_ms);

/// 1 when the loop is asleep and curl's timer now falls before it would wake by itself (another
/// thread drove curl meanwhile and set a nearer timeout): it must be woken.
int sy_curl_loop_needs_wake(sy_curl_loop *loop);

/// Waits up to `wait_ms` for watched sockets or a wake-up, and keeps the ready sockets for
/// sy_curl_loop_dispatch. Does not touch curl. 1 when woken by sy_curl_loop_wake, 0 when not, -1
/// when the poller failed.
int sy_curl_loop_poll(sy_curl_loop *loop, int wait_ms);

/// Runs curl_multi_socket_action for every socket the last poll found ready, then for the timer
/// when it is due. Finished transfers are then in curl_multi_info_read.
void sy_curl_loop_dispatch(sy_curl_loop *loop);

#endif
