/* check.h - what the C tests share: the assertion macro, and deterministic
 * random data.
 *
 *     CHECK(n == 3);
 *     CHECK(rc == 0, "load failed: %s", spectral_last_error());
 *     ...
 *     return check_report("test_name");
 *
 * A failed check prints its file, line, condition and optional printf-style
 * message to stderr and is counted; the test goes on, so one run lists every
 * failure. The message's arguments are evaluated only when the check fails. */
#ifndef SPECTRAL_TESTS_CHECK_H
#define SPECTRAL_TESTS_CHECK_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int check_count, check_failures;

static inline void check_failed(const char *file, int line, const char *cond, const char *fmt, ...) {
    check_failures++;
    fprintf(stderr, "FAIL %s:%d: %s", file, line, cond);
    if (fmt[0]) {
        va_list ap;
        va_start(ap, fmt);
        fputs(": ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
}

/* CHECK(cond) or CHECK(cond, fmt, ...); the "" ends an empty message. */
#define CHECK(...) CHECK_(__VA_ARGS__, "")
#define CHECK_(cond, ...)                                                 \
    do {                                                                  \
        check_count++;                                                    \
        if (!(cond)) check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__); \
    } while (0)

/* Prints "name: N checks, M failures" and returns the exit status. */
static inline int check_report(const char *name) {
    printf("%s: %d checks, %d failures\n", name, check_count, check_failures);
    return check_failures ? 1 : 0;
}

/* Test data: xorshift64 from a fixed seed (a test may set test_rng first
 * for a sequence of its own), uniform in [-1, 1). */
static uint64_t test_rng = 0x9E3779B97F4A7C15ull;
static inline double test_urand(void) {
    test_rng ^= test_rng << 13;
    test_rng ^= test_rng >> 7;
    test_rng ^= test_rng << 17;
    return (double)(test_rng >> 11) / 4503599627370496.0 - 1.0;
}
static inline float test_frand(void) { return (float)test_urand(); }
/* p[i] = offset + scale * uniform[-1, 1) */
static inline void test_fill(float *p, int64_t n, float scale, float offset) {
    for (int64_t i = 0; i < n; i++) p[i] = offset + scale * test_frand();
}

/* Token ids from a text file of whitespace-separated integers (the parity
 * fixtures' ids_*.txt): the count, with *out malloc'd, or -1 when the file
 * cannot be read or holds anything else. */
static inline int64_t test_read_ids(const char *path, int32_t **out) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int64_t n = 0, cap = 256;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    long v;
    while (ids && fscanf(f, "%ld", &v) == 1) {
        if (v < INT32_MIN || v > INT32_MAX) break;
        if (n == cap) {
            int32_t *nb = realloc(ids, (size_t)cap * 2 * sizeof *ids);
            if (!nb) break;
            ids = nb;
            cap *= 2;
        }
        ids[n++] = (int32_t)v;
    }
    const int ok = ids && feof(f) && !ferror(f);
    fclose(f);
    if (!ok) {
        free(ids);
        return -1;
    }
    *out = ids;
    return n;
}

#endif
