/* spectral-embed's records and the writer that keeps them whole: see
 * embed_output.h. */
#define _POSIX_C_SOURCE 200809L
#include "embed_output.h"
#include "cli.h"
#include "utf8.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static struct {
    enum output_format format;
    char buf[1 << 16];
    size_t len;
    int err; /* the first failed write's errno: nothing more is written */
} g_out;

/* Shared with the signal handler. */
static volatile sig_atomic_t g_writing, g_stop_signal, g_any_record, g_closed;

/* write(2) until all of it is out: 0, or errno. */
static int write_all(const char *p, size_t n) {
    while (n) {
        const ssize_t w = write(STDOUT_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR) continue; /* a signal: the handler decided to let the record finish */
            return errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void flush_out(void) {
    if (!g_out.err && g_out.len) g_out.err = write_all(g_out.buf, g_out.len);
    g_out.len = 0;
}

static void put(const void *p, size_t n) {
    if (g_out.err) return;
    if (n > sizeof g_out.buf - g_out.len) {
        flush_out();
        if (n >= sizeof g_out.buf) { /* raw token states: straight out */
            if (!g_out.err) g_out.err = write_all(p, n);
            return;
        }
    }
    memcpy(g_out.buf + g_out.len, p, n);
    g_out.len += n;
}

static void put_char(char c) { put(&c, 1); }
static void put_str(const char *s) { put(s, strlen(s)); }

static void put_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void put_fmt(const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) put(tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* -o json's closing bracket, written directly: async-signal-safe, and only
 * called when no record is half in the buffer. */
static void close_array_now(void) {
    if (g_out.format != OUTPUT_JSON || g_closed || g_out.err) return;
    const char *end = g_any_record ? "\n]\n" : "[]\n";
    write_all(end, strlen(end));
    g_closed = 1;
}

static void on_stop_signal(int sig) {
    if (g_writing) {
        g_stop_signal = sig; /* output_record ends the process after its record */
        return;
    }
    close_array_now();
    _exit(128 + sig);
}

void output_begin(enum output_format format) {
    g_out.format = format;
    cli_on_stop_signals(on_stop_signal);
}

/* A JSON string. Bytes that are not valid UTF-8 become U+FFFD, so the output
 * always parses; returns 0 when that happened (the caller then adds a
 * lossless form). */
static int json_string(const char *s) {
    int lossless = 1;
    put_char('"');
    const unsigned char *end = (const unsigned char *)s + strlen(s);
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        const int n = utf8_len(p, (size_t)(end - p));
        if (n == 0) {
            put_str("\\ufffd");
            lossless = 0;
            p++;
            continue;
        }
        if (n > 1) {
            put(p, (size_t)n);
            p += n;
            continue;
        }
        if (*p == '"' || *p == '\\') put_fmt("\\%c", *p);
        else if (*p == '\n') put_str("\\n");
        else if (*p == '\t') put_str("\\t");
        else if (*p < 0x20 || *p == 0x7f) put_fmt("\\u%04x", *p);
        else put_char((char)*p);
        p++;
    }
    put_char('"');
    return lossless;
}

/* The raw bytes of s, percent-encoded (RFC 3986 unreserved bytes and '/'
 * kept): the lossless form of a name that is not valid UTF-8. */
static void json_percent(const char *s) {
    put_char('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~/", *p))
            put_char((char)*p);
        else
            put_fmt("%%%02X", *p);
    }
    put_char('"');
}

/* %.9g round-trips every float32. The library hands out finite outputs only
 * (a document with a NaN or Inf fails), so every value is a JSON number. */
static void json_floats(const float *v, int64_t n) {
    put_char('[');
    for (int64_t i = 0; i < n; i++) {
        if (i) put_char(',');
        put_fmt("%.9g", v[i]);
    }
    put_char(']');
}

int output_record(const char *input, int64_t n_tokens, const float *pooled, int64_t n_pooled,
                  const float *states, int64_t rows, int64_t n_embd) {
    g_writing = 1;
    if (g_out.format == OUTPUT_RAW) {
        if (pooled) put(pooled, (size_t)n_pooled * sizeof(float));
        else put(states, (size_t)(rows * n_embd) * sizeof(float));
    } else {
        if (g_out.format == OUTPUT_JSON) put_str(g_any_record ? ",\n" : "[\n");
        put_str("{\"input\": ");
        if (!json_string(input)) {
            put_str(", \"input_percent\": ");
            json_percent(input);
        }
        put_fmt(", \"n_tokens\": %lld, ", (long long)n_tokens);
        if (pooled) {
            put_str("\"embedding\": ");
            json_floats(pooled, n_pooled);
        } else {
            put_str("\"embeddings\": [");
            for (int64_t r = 0; r < rows; r++) {
                if (r) put_char(',');
                json_floats(states + r * n_embd, n_embd);
            }
            put_char(']');
        }
        put_char('}');
        if (g_out.format == OUTPUT_JSONL) put_char('\n');
    }
    flush_out();
    if (!g_out.err) g_any_record = 1;
    g_writing = 0;
    if (g_stop_signal) { /* the record is whole and out */
        close_array_now();
        _exit(128 + g_stop_signal);
    }
    return g_out.err;
}

int output_end(void) {
    g_writing = 1;
    if (g_out.format == OUTPUT_JSON && !g_closed) {
        put_str(g_any_record ? "\n]\n" : "[]\n");
        g_closed = 1;
    }
    flush_out();
    g_writing = 0;
    if (g_stop_signal) _exit(128 + g_stop_signal);
    return g_out.err;
}
