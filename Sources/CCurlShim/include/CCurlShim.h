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

#endif
