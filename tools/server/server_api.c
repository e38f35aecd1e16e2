/* server_api.c - the OpenAI embeddings wire format (see server_api.h).
 * JSON is parsed by jansson, which validates UTF-8, rejects duplicate keys
 * and bounds nesting depth; responses are written by hand so that floats
 * are printed exactly as spectral-embed prints them (%.9g). */
#define _POSIX_C_SOURCE 200809L
#include "server_api.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- buffer ------------------------------------------------------------ */

static bool buf_reserve(srv_buf *b, size_t extra) {
    if (b->failed) return false;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return false;
    }
    if (b->len + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->failed = true;
        return false;
    }
    b->data = d;
    b->cap = cap;
    return true;
}

void srv_buf_put(srv_buf *b, const void *data, size_t len) {
    if (!buf_reserve(b, len)) return;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = 0;
}

void srv_buf_puts(srv_buf *b, const char *s) { srv_buf_put(b, s, strlen(s)); }

void srv_buf_printf(srv_buf *b, const char *fmt, ...) {
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        srv_buf_put(b, small, (size_t)n);
        return;
    }
    if (!buf_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at p (1-4) within n bytes, or 0 when
 * it is not one (stray continuation, overlong form, surrogate, > U+10FFFF). */
static int utf8_len(const unsigned char *p, size_t n) {
    const unsigned c = p[0];
    int k;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) k = 2;
    else if (c >= 0xE0 && c <= 0xEF) k = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) k = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return 0;
    if ((size_t)k > n || p[1] < lo || p[1] > hi) return 0;
    for (int i = 2; i < k; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return k;
}

void srv_buf_json_string(srv_buf *b, const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    srv_buf_put(b, "\"", 1);
    while (p < end) {
        const int k = utf8_len(p, (size_t)(end - p));
        if (k == 0) {
            srv_buf_puts(b, "\\ufffd");
            p++;
        } else if (k > 1) {
            srv_buf_put(b, p, (size_t)k);
            p += k;
        } else {
            if (*p == '"' || *p == '\\') {
                const char esc[2] = {'\\', (char)*p};
                srv_buf_put(b, esc, 2);
            } else if (*p == '\n') {
                srv_buf_puts(b, "\\n");
            } else if (*p < 0x20 || *p == 0x7f) {
                srv_buf_printf(b, "\\u%04x", *p);
            } else {
                srv_buf_put(b, p, 1);
            }
            p++;
        }
    }
    srv_buf_put(b, "\"", 1);
}

char *srv_buf_take(srv_buf *b, size_t *len) {
    char *d = NULL;
    if (!b->failed && buf_reserve(b, 0)) {
        d = b->data;
        d[b->len] = 0;
        if (len) *len = b->len;
    } else {
        free(b->data);
    }
    memset(b, 0, sizeof *b);
    return d;
}

void srv_buf_free(srv_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ---- errors ------------------------------------------------------------ */

void srv_api_set_errorv(srv_api_error *e, int status, const char *type, const char *param,
                        const char *code, const char *fmt, va_list ap) {
    e->status = status;
    e->type = type;
    e->param = param;
    e->code = code;
    vsnprintf(e->message, sizeof e->message, fmt, ap);
}

void srv_api_set_error(srv_api_error *e, int status, const char *type, const char *param,
                      const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    srv_api_set_errorv(e, status, type, param, code, fmt, ap);
    va_end(ap);
}

static void json_string_or_null(srv_buf *b, const char *s) {
    if (s) srv_buf_json_string(b, s, strlen(s));
    else srv_buf_puts(b, "null");
}

char *srv_api_error_json(const srv_api_error *e, size_t *len) {
    srv_buf b = {0};
    srv_buf_puts(&b, "{\"error\":{\"message\":");
    srv_buf_json_string(&b, e->message, strlen(e->message));
    srv_buf_puts(&b, ",\"type\":");
    json_string_or_null(&b, e->type);
    srv_buf_puts(&b, ",\"param\":");
    json_string_or_null(&b, e->param);
    srv_buf_puts(&b, ",\"code\":");
    json_string_or_null(&b, e->code);
    srv_buf_puts(&b, "}}\n");
    return srv_buf_take(&b, len);
}

/* ---- parsing ----------------------------------------------------------- */

static int bad(srv_api_error *err, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int bad(srv_api_error *err, const char *param, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    srv_api_set_errorv(err, 400, "invalid_request_error", param, code, fmt, ap);
    va_end(ap);
    return -1;
}

static int oom(srv_api_error *err) {
    srv_api_set_error(err, 500, "server_error", NULL, "out_of_memory", "out of memory");
    return -1;
}

/* Copies a JSON array of integers into ids; what names it in messages. */
static int take_ids(json_t *arr, const srv_api_limits *lim, const char *what, int64_t index,
                    srv_embed_input *in, srv_api_error *err) {
    const size_t n = json_array_size(arr);
    if (n == 0) return bad(err, "input", "empty_input", "%s[%lld] is an empty array of token ids", what, (long long)index);
    in->ids = malloc(n * sizeof *in->ids);
    if (!in->ids) return oom(err);
    in->n_ids = (int64_t)n;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v))
            return bad(err, "input", "invalid_type",
                       "%s[%lld]: token %zu is not an integer; 'input' must be a string, an array of "
                       "strings, an array of token ids or an array of arrays of token ids",
                       what, (long long)index, i);
        const json_int_t id = json_integer_value(v);
        if (id < 0 || id >= lim->n_vocab)
            return bad(err, "input", "invalid_token",
                       "%s[%lld]: token %zu has id %lld, outside the model's vocabulary [0, %d)", what,
                       (long long)index, i, (long long)id, (int)lim->n_vocab);
        in->ids[i] = (int32_t)id;
    }
    return 0;
}

static int take_text(json_t *s, const char *what, int64_t index, srv_embed_input *in,
                     srv_api_error *err) {
    const size_t n = json_string_length(s);
    if (n == 0) return bad(err, "input", "empty_input", "%s[%lld] is an empty string", what, (long long)index);
    in->text = malloc(n);
    if (!in->text) return oom(err);
    memcpy(in->text, json_string_value(s), n);
    in->len = n;
    return 0;
}

static int parse_input(json_t *input, const srv_api_limits *lim, srv_embed_request *out,
                       srv_api_error *err) {
    if (!input) return bad(err, "input", "missing_input", "'input' is required");
    if (json_is_string(input)) {
        out->inputs = calloc(1, sizeof *out->inputs);
        if (!out->inputs) return oom(err);
        out->n_inputs = 1;
        return take_text(input, "input", 0, &out->inputs[0], err) ? -1 : 0;
    }
    if (!json_is_array(input))
        return bad(err, "input", "invalid_type",
                   "'input' must be a string, an array of strings, an array of token ids or an "
                   "array of arrays of token ids");
    const size_t n = json_array_size(input);
    if (n == 0) return bad(err, "input", "empty_input", "'input' is an empty array");
    json_t *first = json_array_get(input, 0);
    if (json_is_integer(first)) {
        /* One document given as token ids. */
        out->inputs = calloc(1, sizeof *out->inputs);
        if (!out->inputs) return oom(err);
        out->n_inputs = 1;
        return take_ids(input, lim, "input", 0, &out->inputs[0], err);
    }
    if ((int64_t)n > lim->max_inputs)
        return bad(err, "input", "too_many_inputs", "'input' has %zu items, more than the limit of %lld",
                   n, (long long)lim->max_inputs);
    out->inputs = calloc(n, sizeof *out->inputs);
    if (!out->inputs) return oom(err);
    out->n_inputs = (int64_t)n;
    const bool strings = json_is_string(first);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(input, i);
        if (strings && json_is_string(v)) {
            if (take_text(v, "input", (int64_t)i, &out->inputs[i], err)) return -1;
        } else if (!strings && json_is_array(v)) {
            if (take_ids(v, lim, "input", (int64_t)i, &out->inputs[i], err)) return -1;
        } else {
            return bad(err, "input", "invalid_type",
                       "input[%zu]: 'input' must be a string, an array of strings, an array of token "
                       "ids or an array of arrays of token ids (not a mix)",
                       i);
        }
    }
    return 0;
}

int srv_api_parse_embed(const char *body, size_t len, const srv_api_limits *lim,
                       srv_embed_request *out, int64_t *dimensions, srv_api_error *err) {
    memset(out, 0, sizeof *out);
    if (dimensions) *dimensions = 0;
    json_error_t jerr;
    /* JSON_ALLOW_NUL: a text may contain U+0000, as a file given to
     * spectral-embed may; lengths come from json_string_length. */
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_invalid_utf8)
            return bad(err, NULL, "invalid_utf8", "the request body is not valid UTF-8: %s", jerr.text);
        if (json_error_code(&jerr) == json_error_out_of_memory) return oom(err);
        return bad(err, NULL, "invalid_json", "the request body is not valid JSON: %s (line %d, column %d)",
                   jerr.text, jerr.line, jerr.column);
    }
    int rc = -1;
    if (!json_is_object(root)) {
        bad(err, NULL, "invalid_json", "the request body must be a JSON object");
        goto done;
    }
    json_t *v = json_object_get(root, "model");
    if (v && !json_is_string(v) && !json_is_null(v)) {
        bad(err, "model", "invalid_type", "'model' must be a string");
        goto done;
    }
    v = json_object_get(root, "encoding_format");
    if (v && !json_is_null(v)) {
        const char *f = json_is_string(v) ? json_string_value(v) : NULL;
        if (f && !strcmp(f, "base64") && json_string_length(v) == 6) {
            out->base64 = true;
        } else if (!f || strcmp(f, "float") || json_string_length(v) != 5) {
            bad(err, "encoding_format", "invalid_value", "'encoding_format' must be \"float\" or \"base64\"");
            goto done;
        }
    }
    v = json_object_get(root, "dimensions");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            bad(err, "dimensions", "invalid_value", "'dimensions' must be a positive integer");
            goto done;
        }
        if (dimensions) *dimensions = (int64_t)json_integer_value(v);
    }
    v = json_object_get(root, "user");
    if (v && !json_is_string(v) && !json_is_null(v)) {
        bad(err, "user", "invalid_type", "'user' must be a string");
        goto done;
    }
    rc = parse_input(json_object_get(root, "input"), lim, out, err);
done:
    json_decref(root);
    if (rc) srv_embed_request_free(out);
    return rc;
}

void srv_embed_request_free(srv_embed_request *r) {
    for (int64_t i = 0; i < r->n_inputs; i++) {
        free(r->inputs[i].text);
        free(r->inputs[i].ids);
    }
    free(r->inputs);
    memset(r, 0, sizeof *r);
}

/* ---- responses --------------------------------------------------------- */

static void put_base64(srv_buf *b, const unsigned char *p, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (!buf_reserve(b, (n + 2) / 3 * 4 + 2)) return;
    char *o = b->data + b->len;
    *o++ = '"';
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        const unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < n) {
        const unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = 0;
}

char *srv_api_embeddings_json(const float *vectors, int64_t n, int64_t n_embd, bool base64,
                             const char *model_id, int64_t prompt_tokens, size_t *len) {
    srv_buf b = {0};
    srv_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    for (int64_t i = 0; i < n && !b.failed; i++) {
        const float *v = vectors + i * n_embd;
        srv_buf_printf(&b, "%s{\"object\":\"embedding\",\"index\":%lld,\"embedding\":", i ? "," : "",
                      (long long)i);
        if (base64) {
            /* little-endian float32, as OpenAI's base64 format is */
            unsigned char *raw = malloc((size_t)n_embd * 4);
            if (!raw) {
                b.failed = true;
                break;
            }
            for (int64_t k = 0; k < n_embd; k++) {
                uint32_t u;
                memcpy(&u, &v[k], 4);
                raw[4 * k] = (unsigned char)u;
                raw[4 * k + 1] = (unsigned char)(u >> 8);
                raw[4 * k + 2] = (unsigned char)(u >> 16);
                raw[4 * k + 3] = (unsigned char)(u >> 24);
            }
            put_base64(&b, raw, (size_t)n_embd * 4);
            free(raw);
        } else {
            srv_buf_put(&b, "[", 1);
            for (int64_t k = 0; k < n_embd; k++) {
                /* %.9g round-trips float32; JSON has no NaN/Inf: null, as spectral-embed. */
                if (isfinite(v[k])) srv_buf_printf(&b, k ? ",%.9g" : "%.9g", v[k]);
                else srv_buf_puts(&b, k ? ",null" : "null");
            }
            srv_buf_put(&b, "]", 1);
        }
        srv_buf_put(&b, "}", 1);
    }
    srv_buf_puts(&b, "],\"model\":");
    srv_buf_json_string(&b, model_id, strlen(model_id));
    srv_buf_printf(&b, ",\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%lld}}\n",
                  (long long)prompt_tokens, (long long)prompt_tokens);
    return srv_buf_take(&b, len);
}

/* ---- authorization ----------------------------------------------------- */

bool srv_api_bearer_ok(const char *header, const char *key) {
    if (!header || !key) return false;
    /* The scheme is not secret (and is case-insensitive, RFC 7235). */
    if (strncasecmp(header, "Bearer ", 7)) return false;
    const char *given = header + 7;
    const size_t n_key = strlen(key), n_given = strlen(given);
    /* Every byte of the key is compared whatever matched before, and the
     * loop runs over the key's length, not the client's. */
    volatile unsigned char diff = n_given != n_key;
    for (size_t i = 0; i < n_key; i++) {
        const unsigned char g = i < n_given ? (unsigned char)given[i] : 0;
        diff |= (unsigned char)(g ^ (unsigned char)key[i]);
    }
    return diff == 0;
}
