/// The C program of the bench's libcurl row: a minimal loop on libcurl's multi interface, with no
/// Swift in it, so that the part of the gap to wrk that is libcurl's shows apart from the part
/// that is the client's. It keeps N easy handles in flight on one multi handle (HTTP/1.1, the
/// client's options, connections reused), driven the textbook way (`curl_multi_perform` and
/// `curl_multi_poll`), and re-adds each handle as soon as it finishes. It is compiled at bench
/// time with `cc ... -lcurl`, as a source string so the bench needs no file beside its binary.
/// Arguments: URL, CA file, requests in flight, seconds. Output, one line: requests, seconds,
/// p50 and p99 in ms, and its own CPU time in µs over the measured window.
let curlMultiLoopSource = #"""
    // A minimal libcurl multi loop: N easy handles kept in flight on one multi handle, each one
    // re-added as soon as it finishes, so connections are reused. Prints one line:
    // "requests <n> seconds <s> p50_ms <x> p99_ms <y> cpu_us <z>".
    #include <curl/curl.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/resource.h>
    #include <time.h>

    static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
    }

    static size_t discard(char *data, size_t size, size_t count, void *user) {
        (void)data;
        (void)user;
        return size * count;
    }

    /// User + system CPU time of this process, in µs.
    static double cpu_us(void) {
        struct rusage u;
        getrusage(RUSAGE_SELF, &u);
        return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 + u.ru_utime.tv_usec + u.ru_stime.tv_usec;
    }

    static int compare(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
    }

    int main(int argc, char **argv) {
        if (argc < 5) {
            fprintf(stderr, "usage: %s URL CAFILE IN_FLIGHT SECONDS\n", argv[0]);
            return 2;
        }
        const char *url = argv[1], *ca = argv[2];
        int n = atoi(argv[3]);
        double seconds = atof(argv[4]);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        CURLM *multi = curl_multi_init();
        curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)n);
        struct curl_slist *headers = curl_slist_append(NULL, "Expect:");
        double *started = calloc(n, sizeof(double));
        size_t capacity = 1 << 20, count = 0;
        double *samples = malloc(capacity * sizeof(double));
        for (int i = 0; i < n; i++) {
            CURL *easy = curl_easy_init();
            curl_easy_setopt(easy, CURLOPT_URL, url);
            curl_easy_setopt(easy, CURLOPT_CAINFO, ca);
            curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
            curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
            curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
            curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
            curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard);
            curl_easy_setopt(easy, CURLOPT_PRIVATE, (void *)(long)i);
            started[i] = now();
            curl_multi_add_handle(multi, easy);
        }
        // The first 50 answers warm the connections up and are not counted.
        long warm = 50, done = 0;
        double start = now(), end = start + 1e9, cpu_start = cpu_us();
        int running = 0, inFlight = n;
        while (inFlight > 0) {
            curl_multi_perform(multi, &running);
            CURLMsg *message;
            int left;
            while ((message = curl_multi_info_read(multi, &left))) {
                if (message->msg != CURLMSG_DONE) continue;
                CURL *easy = message->easy_handle;
                long status = 0, i = 0;
                void *privateData = NULL;
                curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
                curl_easy_getinfo(easy, CURLINFO_PRIVATE, &privateData);
                i = (long)privateData;
                if (message->data.result != CURLE_OK || status != 200) {
                    fprintf(stderr, "request failed: %s, status %ld\n", curl_easy_strerror(message->data.result), status);
                    return 1;
                }
                curl_multi_remove_handle(multi, easy);
                inFlight--;
                double t = now();
                if (++done == warm) {
                    start = t;
                    end = start + seconds;
                    cpu_start = cpu_us();
                    count = 0;
                } else if (done > warm && count < capacity) {
                    samples[count++] = (t - started[i]) * 1000;
                }
                if (t < end) {
                    started[i] = t;
                    curl_multi_add_handle(multi, easy);
                    inFlight++;
                }
            }
            if (inFlight > 0) curl_multi_poll(multi, NULL, 0, 1000, NULL);
        }
        double total = now() - start, cpu = cpu_us() - cpu_start;
        qsort(samples, count, sizeof(double), compare);
        printf("requests %zu seconds %.6f p50_ms %.6f p99_ms %.6f cpu_us %.0f\n", count, total, count ? samples[count * 50 / 100] : 0.0,
               count ? samples[count * 99 / 100] : 0.0, cpu);
        return 0;
    }
    """#
