/* A test-only LD_PRELOAD shim: shifts the wall clock of the process it is
 * loaded into by CLOCK_SKEW_MS milliseconds (gettimeofday and
 * clock_gettime(CLOCK_REALTIME*)), so that a real redis-server runs with a
 * clock that is off by seconds. libfaketime does the same in general but
 * recurses into jemalloc's start-up in Debian's redis-server; this shim
 * allocates nothing. Built by tests/common/redis.rs with `cc`. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long long skew_us(void) {
    const char *raw = getenv("CLOCK_SKEW_MS");
    return raw ? atoll(raw) * 1000LL : 0;
}

int gettimeofday(struct timeval *tv, void *tz) {
    static int (*real)(struct timeval *, void *);
    if (!real) real = (int (*)(struct timeval *, void *))dlsym(RTLD_NEXT, "gettimeofday");
    int rc = real(tv, tz);
    if (rc == 0 && tv) {
        long long us = tv->tv_sec * 1000000LL + tv->tv_usec + skew_us();
        tv->tv_sec = us / 1000000LL;
        tv->tv_usec = us % 1000000LL;
    }
    return rc;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real(id, ts);
    if (rc == 0 && ts && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        long long ns = ts->tv_sec * 1000000000LL + ts->tv_nsec + skew_us() * 1000LL;
        ts->tv_sec = ns / 1000000000LL;
        ts->tv_nsec = ns % 1000000000LL;
    }
    return rc;
}
