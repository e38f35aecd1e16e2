/* server_api.c - the wire formats of spectral-server (see server_api.h).
 * JSON is parsed by jansson, which validates UTF-8, rejects duplicate keys
 * and bounds nesting depth; answers are written by hand so that floats are
 * printed exactly as spectral-embed prints them (%.9g). */
#define _POSIX_C_SOURCE 200809L
#include "server_api.h"
#include "utf8.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- buffer ------------------------------------------------------------ */

bool srv_buf_reserve(srv_buf *b, size_t extra) {
    if (b->failed) return false;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return false;
    }
    if (b->len + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    if (!b->cap && cap > b->len + extra + 1) cap = b->len + extra + 1 > 256 ? b->len + extra + 1 : 256;
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
    if (!srv_buf_reserve(b, len)) return;
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
    if (!srv_buf_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
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
    if (!b->failed && srv_buf_reserve(b, 0)) {
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

/* TEI's error types and statuses: a request it cannot take is 422, a full
 * server 429 ("overloaded"), a stopping one 503 ("unhealthy"). */
static const char *tei_error(const srv_api_error *e, int *status) {
    const char *code = e->code ? e->code : "";
    *status = e->status;
    switch (e->status) {
    case 400:
        if (!strcmp(code, "empty_input")) return "empty";
        if (strcmp(code, "invalid_json") && strcmp(code, "invalid_utf8") && strcmp(code, "conflicting_length"))
            *status = 422;
        return "validation";
    case 503:
        if (!strcmp(code, "shutting_down")) return "unhealthy";
        *status = 429;
        return "overloaded";
    default:
        return e->status >= 500 ? "backend" : e->status == 401 ? "unauthorized" : "validation";
    }
}

/* llama-server's error types (its format_error_response). */
static const char *llama_error_type(const srv_api_error *e) {
    const char *code = e->code ? e->code : "";
    switch (e->status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 503: return "unavailable_error";
    case 413:
        if (!strcmp(code, "input_too_long") || !strcmp(code, "input_too_large")) return "exceed_context_size_error";
        return "invalid_request_error";
    default: return e->status >= 500 ? "server_error" : "invalid_request_error";
    }
}

char *srv_api_error_json(const srv_api_error *e, srv_proto proto, int *status, size_t *len) {
    srv_buf b = {0};
    int st = e->status;
    if (proto == SRV_PROTO_TEI) {
        const char *type = tei_error(e, &st);
        srv_buf_puts(&b, "{\"error\":");
        srv_buf_json_string(&b, e->message, strlen(e->message));
        srv_buf_printf(&b, ",\"error_type\":\"%s\"}\n", type);
    } else if (proto == SRV_PROTO_LLAMA) {
        srv_buf_printf(&b, "{\"error\":{\"code\":%d,\"message\":", st);
        srv_buf_json_string(&b, e->message, strlen(e->message));
        srv_buf_printf(&b, ",\"type\":\"%s\"}}\n", llama_error_type(e));
    } else {
        srv_buf_puts(&b, "{\"error\":{\"message\":");
        srv_buf_json_string(&b, e->message, strlen(e->message));
        srv_buf_puts(&b, ",\"type\":");
        json_string_or_null(&b, e->type);
        srv_buf_puts(&b, ",\"param\":");
        json_string_or_null(&b, e->param);
        srv_buf_puts(&b, ",\"code\":");
        json_string_or_null(&b, e->code);
        srv_buf_puts(&b, "}}\n");
    }
    if (status) *status = st;
    return srv_buf_take(&b, len);
}

/* ---- parsing ----------------------------------------------------------- */

/* The charge jansson's allocations go to while this thread parses. */
static _Thread_local srv_charge *tl_charge;

static void *counted_malloc(size_t n) { return srv_charged_alloc(tl_charge, n); }

void srv_api_init(void) { json_set_alloc_funcs(counted_malloc, srv_charged_free); }

/* What one parse works with. */
typedef struct {
    const srv_api_limits *lim;
    srv_charge *charge;
    srv_api_error *err;
    const char *key; /* the input's key, for messages */
} parse_ctx;

static int bad(srv_api_error *err, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int bad(srv_api_error *err, const char *param, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    srv_api_set_errorv(err, 400, "invalid_request_error", param, code, fmt, ap);
    va_end(ap);
    return -1;
}

/* An allocation failed: the request's memory budget (retry later, or never
 * when it alone is over it) or the machine's. */
static int oom(const parse_ctx *c) {
    srv_charge *ch = c->charge;
    if (ch && atomic_load(&ch->refused)) {
        if (atomic_load(&ch->never_fits))
            srv_api_set_error(c->err, 413, "invalid_request_error", NULL, "request_too_large",
                              "this request needs more memory than the server gives all requests together "
                              "(--request-mem %zu bytes)", ch->budget->limit);
        else
            srv_api_set_error(c->err, 503, "server_error", NULL, "server_busy",
                              "the server's request memory (--request-mem) is taken by other requests; retry later");
    } else {
        srv_api_set_error(c->err, 500, "server_error", NULL, "out_of_memory", "out of memory");
    }
    return -1;
}

/* The body as a JSON object, jansson's tree counted against the charge. */
static json_t *load_object(const char *body, size_t len, const parse_ctx *c) {
    json_error_t jerr;
    srv_charge *saved = tl_charge;
    tl_charge = c->charge;
    /* JSON_ALLOW_NUL: a text may contain U+0000, as a file given to
     * spectral-embed may; lengths come from json_string_length. */
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    tl_charge = saved;
    if (!root) {
        if (json_error_code(&jerr) == json_error_invalid_utf8)
            bad(c->err, NULL, "invalid_utf8", "the request body is not valid UTF-8: %s", jerr.text);
        else if (json_error_code(&jerr) == json_error_out_of_memory)
            oom(c);
        else
            bad(c->err, NULL, "invalid_json", "the request body is not valid JSON: %s (line %d, column %d)",
                jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        bad(c->err, NULL, "invalid_json", "the request body must be a JSON object");
        json_decref(root);
        return NULL;
    }
    return root;
}

/* An optional boolean: -1 absent or null, else 0 or 1; -2 (error set) otherwise. */
static int opt_bool(json_t *root, const char *key, const parse_ctx *c) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return -1;
    if (!json_is_boolean(v)) return bad(c->err, key, "invalid_type", "'%s' must be true or false", key), -2;
    return json_is_true(v);
}

/* Copies a JSON array of integers into ids; index names it in messages. */
static int take_ids(json_t *arr, const parse_ctx *c, int64_t index, srv_embed_input *in) {
    const size_t n = json_array_size(arr);
    if (n == 0)
        return bad(c->err, "input", "empty_input", "%s[%lld] is an empty array of token ids", c->key, (long long)index);
    in->ids = srv_charged_alloc(c->charge, n * sizeof *in->ids);
    if (!in->ids) return oom(c);
    in->n_ids = (int64_t)n;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v))
            return bad(c->err, "input", "invalid_type",
                       "%s[%lld]: token %zu is not an integer; '%s' must be a string, an array of "
                       "strings, an array of token ids or an array of arrays of token ids",
                       c->key, (long long)index, i, c->key);
        const json_int_t id = json_integer_value(v);
        if (id < 0 || id >= c->lim->n_vocab)
            return bad(c->err, "input", "invalid_token",
                       "%s[%lld]: token %zu has id %lld, outside the model's vocabulary [0, %d)", c->key,
                       (long long)index, i, (long long)id, (int)c->lim->n_vocab);
        in->ids[i] = (int32_t)id;
    }
    return 0;
}

static int take_text(json_t *s, const parse_ctx *c, int64_t index, bool allow_empty, srv_embed_input *in) {
    const size_t n = json_string_length(s);
    if (n == 0 && !allow_empty)
        return bad(c->err, "input", "empty_input", "%s[%lld] is an empty string", c->key, (long long)index);
    in->text = srv_charged_alloc(c->charge, n ? n : 1);
    if (!in->text) return oom(c);
    memcpy(in->text, json_string_value(s), n);
    in->len = n;
    return 0;
}

/* The input of an embedding request: a string, an array of strings, an
 * array of token ids (one document) or an array of arrays of token ids. */
static int parse_input(json_t *input, const parse_ctx *c, srv_embed_input **inputs, int64_t *n_inputs) {
    if (!input) return bad(c->err, "input", "missing_input", "'%s' is required", c->key);
    if (json_is_string(input)) {
        *inputs = srv_charged_alloc(c->charge, sizeof **inputs);
        if (!*inputs) return oom(c);
        memset(*inputs, 0, sizeof **inputs);
        *n_inputs = 1;
        return take_text(input, c, 0, false, &(*inputs)[0]);
    }
    if (!json_is_array(input))
        return bad(c->err, "input", "invalid_type",
                   "'%s' must be a string, an array of strings, an array of token ids or an "
                   "array of arrays of token ids", c->key);
    const size_t n = json_array_size(input);
    if (n == 0) return bad(c->err, "input", "empty_input", "'%s' is an empty array", c->key);
    json_t *first = json_array_get(input, 0);
    if (json_is_integer(first)) {
        /* One document given as token ids. */
        *inputs = srv_charged_alloc(c->charge, sizeof **inputs);
        if (!*inputs) return oom(c);
        memset(*inputs, 0, sizeof **inputs);
        *n_inputs = 1;
        return take_ids(input, c, 0, &(*inputs)[0]);
    }
    if ((int64_t)n > c->lim->max_inputs)
        return bad(c->err, "input", "too_many_inputs", "'%s' has %zu items, more than the limit of %lld",
                   c->key, n, (long long)c->lim->max_inputs);
    *inputs = srv_charged_alloc(c->charge, n * sizeof **inputs);
    if (!*inputs) return oom(c);
    memset(*inputs, 0, n * sizeof **inputs);
    *n_inputs = (int64_t)n;
    const bool strings = json_is_string(first);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(input, i);
        if (strings && json_is_string(v)) {
            if (take_text(v, c, (int64_t)i, false, &(*inputs)[i])) return -1;
        } else if (!strings && json_is_array(v)) {
            if (take_ids(v, c, (int64_t)i, &(*inputs)[i])) return -1;
        } else {
            return bad(c->err, "input", "invalid_type",
                       "%s[%zu]: '%s' must be a string, an array of strings, an array of token "
                       "ids or an array of arrays of token ids (not a mix)", c->key, i, c->key);
        }
    }
    return 0;
}

static void free_inputs(srv_embed_input *inputs, int64_t n) {
    for (int64_t i = 0; inputs && i < n; i++) {
        srv_charged_free(inputs[i].text);
        srv_charged_free(inputs[i].ids);
    }
    srv_charged_free(inputs);
}

/* OPENAI's own keys. */
static int parse_openai_options(json_t *root, const parse_ctx *c, srv_embed_request *out) {
    json_t *v = json_object_get(root, "model");
    if (v && !json_is_string(v) && !json_is_null(v)) return bad(c->err, "model", "invalid_type", "'model' must be a string");
    v = json_object_get(root, "encoding_format");
    if (v && !json_is_null(v)) {
        const char *f = json_is_string(v) ? json_string_value(v) : NULL;
        if (f && !strcmp(f, "base64") && json_string_length(v) == 6) out->base64 = true;
        else if (!f || strcmp(f, "float") || json_string_length(v) != 5)
            return bad(c->err, "encoding_format", "invalid_value", "'encoding_format' must be \"float\" or \"base64\"");
    }
    v = json_object_get(root, "user");
    if (v && !json_is_string(v) && !json_is_null(v)) return bad(c->err, "user", "invalid_type", "'user' must be a string");
    return 0;
}

/* TEI's own keys. */
static int parse_tei_options(json_t *root, const parse_ctx *c, srv_embed_request *out) {
    json_t *v = json_object_get(root, "truncation_direction");
    if (v && !json_is_null(v)) {
        const char *d = json_is_string(v) ? json_string_value(v) : "";
        if (strcasecmp(d, "right"))
            return bad(c->err, "truncation_direction", "invalid_value",
                       "'truncation_direction' must be \"right\": truncation keeps a text's first tokens");
    }
    v = json_object_get(root, "prompt_name");
    if (v && !json_is_null(v))
        return bad(c->err, "prompt_name", "invalid_value", "this model has no prompts: 'prompt_name' must be null");
    const int normalize = opt_bool(root, "normalize", c);
    if (normalize == -2) return -1;
    out->norm = normalize == 0 ? -1 : 2;
    return 0;
}

/* llama-server's own keys. */
static int parse_llama_options(json_t *root, const parse_ctx *c, srv_embed_request *out) {
    json_t *v = json_object_get(root, "embd_normalize");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < -1 || json_integer_value(v) > 1000)
            return bad(c->err, "embd_normalize", "invalid_value",
                       "'embd_normalize' must be an integer: -1 none, 0 max-abs, 1 taxicab, 2 L2, p > 2 the p-norm");
        out->norm = (int)json_integer_value(v);
    }
    return 0;
}

int srv_api_parse_embed(srv_proto proto, const char *body, size_t len, const srv_api_limits *lim,
                        srv_charge *charge, srv_embed_request *out, int64_t *dimensions,
                        srv_api_error *err) {
    memset(out, 0, sizeof *out);
    out->truncate = -1;
    out->norm = 2;
    if (dimensions) *dimensions = 0;
    parse_ctx c = {lim, charge, err, proto == SRV_PROTO_TEI ? "inputs" : "input"};
    json_t *root = load_object(body, len, &c);
    if (!root) return -1;
    int rc = proto == SRV_PROTO_OPENAI ? parse_openai_options(root, &c, out)
             : proto == SRV_PROTO_TEI  ? parse_tei_options(root, &c, out)
                                       : parse_llama_options(root, &c, out);
    if (!rc && proto != SRV_PROTO_LLAMA) {
        json_t *v = json_object_get(root, "dimensions");
        if (v && !json_is_null(v)) {
            if (!json_is_integer(v) || json_integer_value(v) < 1)
                rc = bad(err, "dimensions", "invalid_value", "'dimensions' must be a positive integer");
            else if (dimensions)
                *dimensions = (int64_t)json_integer_value(v);
        }
    }
    if (!rc && proto != SRV_PROTO_LLAMA && (out->truncate = opt_bool(root, "truncate", &c)) == -2) rc = -1;
    json_t *input = json_object_get(root, c.key);
    if (proto == SRV_PROTO_LLAMA && !input) { /* llama-server takes either, "input" first */
        c.key = "content";
        input = json_object_get(root, c.key);
        if (!rc && !input) rc = bad(err, "input", "missing_input", "\"input\" or \"content\" must be provided");
    }
    if (!rc) rc = parse_input(input, &c, &out->inputs, &out->n_inputs);
    json_decref(root);
    if (rc) srv_embed_request_free(out);
    return rc;
}

void srv_embed_request_free(srv_embed_request *r) {
    free_inputs(r->inputs, r->n_inputs);
    memset(r, 0, sizeof *r);
}

int srv_api_parse_tokenize(const char *body, size_t len, const srv_api_limits *lim, srv_charge *charge,
                           srv_tokenize_request *out, srv_api_error *err) {
    memset(out, 0, sizeof *out);
    parse_ctx c = {lim, charge, err, "inputs"};
    json_t *root = load_object(body, len, &c);
    if (!root) return -1;
    int rc = 0;
    json_t *input = json_object_get(root, "inputs");
    if (input) {
        out->proto = SRV_PROTO_TEI;
        const int add = opt_bool(root, "add_special_tokens", &c);
        json_t *v = json_object_get(root, "prompt_name");
        if (add == -2) rc = -1;
        else if (v && !json_is_null(v))
            rc = bad(err, "prompt_name", "invalid_value", "this model has no prompts: 'prompt_name' must be null");
        out->add_special = add != 0;
    } else {
        out->proto = SRV_PROTO_LLAMA;
        c.key = "content";
        input = json_object_get(root, "content");
        const int add = opt_bool(root, "add_special", &c), pieces = opt_bool(root, "with_pieces", &c);
        if (add == -2 || pieces == -2) rc = -1;
        out->add_special = add == 1;
        out->with_pieces = pieces == 1;
        if (!rc && !input) rc = bad(err, "content", "missing_input", "'content' (llama-server) or 'inputs' (TEI) is required");
        if (!rc && !json_is_string(input)) rc = bad(err, "content", "invalid_type", "'content' must be a string");
    }
    if (!rc) {
        const bool batch = json_is_array(input);
        const size_t n = batch ? json_array_size(input) : 1;
        out->batch = batch;
        if (!batch && !json_is_string(input))
            rc = bad(err, "input", "invalid_type", "'inputs' must be a string or an array of strings");
        else if (batch && n == 0)
            rc = bad(err, "input", "empty_input", "'inputs' is an empty array");
        else if ((int64_t)n > lim->max_inputs)
            rc = bad(err, "input", "too_many_inputs", "'inputs' has %zu items, more than the limit of %lld", n,
                     (long long)lim->max_inputs);
        else if (!(out->texts = srv_charged_alloc(charge, n * sizeof *out->texts)))
            rc = oom(&c);
        else
            memset(out->texts, 0, n * sizeof *out->texts);
        for (size_t i = 0; !rc && i < n; i++) {
            json_t *s = batch ? json_array_get(input, i) : input;
            out->n_texts = (int64_t)i + 1;
            if (!json_is_string(s))
                rc = bad(err, "input", "invalid_type", "%s[%zu] is not a string", c.key, i);
            else
                rc = take_text(s, &c, (int64_t)i, true, &out->texts[i]);
        }
    }
    json_decref(root);
    if (rc) srv_tokenize_request_free(out);
    return rc;
}

void srv_tokenize_request_free(srv_tokenize_request *r) {
    free_inputs(r->texts, r->n_texts);
    memset(r, 0, sizeof *r);
}

int srv_api_parse_detokenize(const char *body, size_t len, const srv_api_limits *lim, srv_charge *charge,
                             int32_t **ids, int64_t *n_ids, srv_api_error *err) {
    *ids = NULL;
    *n_ids = 0;
    parse_ctx c = {lim, charge, err, "tokens"};
    json_t *root = load_object(body, len, &c);
    if (!root) return -1;
    int rc = 0;
    json_t *tokens = json_object_get(root, "tokens");
    if (!tokens) {
        rc = bad(err, "tokens", "missing_input", "'tokens' is required");
    } else if (!json_is_array(tokens)) {
        rc = bad(err, "tokens", "invalid_type", "'tokens' must be an array of token ids");
    } else if (json_array_size(tokens) > 0) {
        srv_embed_input in = {0};
        rc = take_ids(tokens, &c, 0, &in);
        *ids = in.ids;
        *n_ids = in.n_ids;
        if (rc) {
            srv_charged_free(in.ids);
            *ids = NULL;
            *n_ids = 0;
        }
    }
    json_decref(root);
    return rc;
}

/* ---- answers ----------------------------------------------------------- */

static void put_base64(srv_buf *b, const unsigned char *p, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (!srv_buf_reserve(b, (n + 2) / 3 * 4 + 2)) return;
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

/* little-endian float32, as OpenAI's base64 format is */
static void put_base64_floats(srv_buf *b, const float *v, int64_t n) {
    unsigned char *raw = malloc((size_t)n * 4 + 1);
    if (!raw) {
        b->failed = true;
        return;
    }
    for (int64_t k = 0; k < n; k++) {
        uint32_t u;
        memcpy(&u, &v[k], 4);
        raw[4 * k] = (unsigned char)u;
        raw[4 * k + 1] = (unsigned char)(u >> 8);
        raw[4 * k + 2] = (unsigned char)(u >> 16);
        raw[4 * k + 3] = (unsigned char)(u >> 24);
    }
    put_base64(b, raw, (size_t)n * 4);
    free(raw);
}

/* %.9g round-trips float32; JSON has no NaN/Inf: null, as spectral-embed. */
static void put_floats(srv_buf *b, const float *v, int64_t n) {
    srv_buf_put(b, "[", 1);
    for (int64_t k = 0; k < n; k++) {
        if (isfinite(v[k])) srv_buf_printf(b, k ? ",%.9g" : "%.9g", v[k]);
        else srv_buf_puts(b, k ? ",null" : "null");
    }
    srv_buf_put(b, "]", 1);
}

/* Bytes of answer per float at most: "-1.23456789e-38," as %.9g prints it. */
#define FLOAT_JSON_MAX 16
/* Per input: the JSON around a vector, and a warning about it. */
#define INPUT_JSON_MAX 96
#define WARNING_JSON_MAX 512

size_t srv_api_embed_bound(srv_proto proto, int64_t n, int64_t width, bool base64, bool notes) {
    const size_t per_vector = base64 && proto == SRV_PROTO_OPENAI ? ((size_t)width * 4 + 2) / 3 * 4 + 2
                                                                  : (size_t)width * FLOAT_JSON_MAX + 2;
    const size_t per_input = per_vector + INPUT_JSON_MAX + (notes ? 2 * WARNING_JSON_MAX : 0);
    return (size_t)n * per_input + 2048; /* the envelope, the model id (<= 256 bytes, escaped) */
}

static void put_warnings(srv_buf *b, const srv_input_note *notes, int64_t n, int64_t n_ctx_train) {
    bool any = false;
    for (int64_t i = 0; i < n; i++) {
        char msg[256];
        if (notes[i].n_tokens < notes[i].n_full) {
            snprintf(msg, sizeof msg, "input[%lld]: %lld tokens, truncated to the first %lld", (long long)i,
                     (long long)notes[i].n_full, (long long)notes[i].n_tokens);
            srv_buf_printf(b, "%s{\"index\":%lld,\"code\":\"truncated\",\"message\":", any ? "," : ",\"warnings\":[",
                           (long long)i);
            srv_buf_json_string(b, msg, strlen(msg));
            srv_buf_printf(b, ",\"n_tokens\":%lld,\"n_full\":%lld}", (long long)notes[i].n_tokens,
                           (long long)notes[i].n_full);
            any = true;
        }
        if (n_ctx_train > 0 && notes[i].n_tokens > n_ctx_train) {
            snprintf(msg, sizeof msg,
                     "input[%lld]: %lld tokens is longer than the model's training length (%lld); embedded "
                     "whole (the mixing is defined for any length), quality may drop",
                     (long long)i, (long long)notes[i].n_tokens, (long long)n_ctx_train);
            srv_buf_printf(b, "%s{\"index\":%lld,\"code\":\"over_training_length\",\"message\":",
                           any ? "," : ",\"warnings\":[", (long long)i);
            srv_buf_json_string(b, msg, strlen(msg));
            srv_buf_printf(b, ",\"n_tokens\":%lld,\"n_ctx_train\":%lld}", (long long)notes[i].n_tokens,
                           (long long)n_ctx_train);
            any = true;
        }
    }
    if (any) srv_buf_put(b, "]", 1);
}

char *srv_api_embed_json(srv_proto proto, const float *vectors, int64_t n, int64_t width, bool base64,
                         const char *model_id, int64_t prompt_tokens, const srv_input_note *notes,
                         int64_t n_ctx_train, size_t *len) {
    srv_buf b = {0};
    /* One allocation of the bound: the charge taken for the answer holds. */
    if (!srv_buf_reserve(&b, srv_api_embed_bound(proto, n, width, base64, notes != NULL))) return NULL;
    if (proto == SRV_PROTO_OPENAI) srv_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    else srv_buf_put(&b, "[", 1);
    for (int64_t i = 0; i < n && !b.failed; i++) {
        const float *v = vectors + i * width;
        if (i) srv_buf_put(&b, ",", 1);
        if (proto == SRV_PROTO_TEI) {
            put_floats(&b, v, width);
        } else if (proto == SRV_PROTO_LLAMA) {
            /* llama-server: one row per pooled input */
            srv_buf_printf(&b, "{\"index\":%lld,\"embedding\":[", (long long)i);
            put_floats(&b, v, width);
            srv_buf_puts(&b, "]}");
        } else {
            srv_buf_printf(&b, "{\"object\":\"embedding\",\"index\":%lld,\"embedding\":", (long long)i);
            if (base64) put_base64_floats(&b, v, width);
            else put_floats(&b, v, width);
            srv_buf_put(&b, "}", 1);
        }
    }
    if (proto == SRV_PROTO_OPENAI) {
        srv_buf_puts(&b, "],\"model\":");
        srv_buf_json_string(&b, model_id, strlen(model_id));
        srv_buf_printf(&b, ",\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%lld}", (long long)prompt_tokens,
                       (long long)prompt_tokens);
        if (notes) put_warnings(&b, notes, n, n_ctx_train);
        srv_buf_puts(&b, "}\n");
    } else {
        srv_buf_puts(&b, "]\n");
    }
    return srv_buf_take(&b, len);
}

/* Whether s[0..n) is valid UTF-8. */
static bool is_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        const int k = utf8_len((const unsigned char *)s + i, n - i);
        if (!k) return false;
        i += (size_t)k;
    }
    return true;
}

size_t srv_api_tokens_bound(const srv_token_seq *seqs, int64_t n_seqs) {
    size_t total = 64;
    for (int64_t s = 0; s < n_seqs; s++)
        total += 8 + (size_t)seqs[s].n * 96 + (size_t)seqs[s].piece_off[seqs[s].n] * 6;
    return total;
}

char *srv_api_tokens_json(const srv_tokenize_request *req, const srv_token_seq *seqs, size_t *len) {
    srv_buf b = {0};
    const bool tei = req->proto == SRV_PROTO_TEI;
    if (!srv_buf_reserve(&b, srv_api_tokens_bound(seqs, req->n_texts))) return NULL;
    srv_buf_puts(&b, tei ? "[" : "{\"tokens\":[");
    for (int64_t s = 0; s < (tei ? req->n_texts : 1) && !b.failed; s++) {
        const srv_token_seq *q = &seqs[s];
        if (tei) srv_buf_puts(&b, s ? ",[" : "[");
        for (int64_t i = 0; i < q->n; i++) {
            const char *p = q->pieces + q->piece_off[i];
            size_t pl = (size_t)(q->piece_off[i + 1] - q->piece_off[i]);
            if (i) srv_buf_put(&b, ",", 1);
            if (tei) {
                /* TEI shows a word's text without the space that starts its piece. */
                if (!q->special[i] && pl && p[0] == ' ') p++, pl--;
                srv_buf_printf(&b, "{\"id\":%d,\"text\":", (int)q->ids[i]);
                srv_buf_json_string(&b, p, pl);
                srv_buf_printf(&b, ",\"special\":%s,\"start\":null,\"stop\":null}", q->special[i] ? "true" : "false");
            } else if (req->with_pieces) {
                srv_buf_printf(&b, "{\"id\":%d,\"piece\":", (int)q->ids[i]);
                if (is_utf8(p, pl)) {
                    srv_buf_json_string(&b, p, pl);
                } else { /* as llama-server: the bytes of a piece that is not UTF-8 */
                    srv_buf_put(&b, "[", 1);
                    for (size_t k = 0; k < pl; k++) srv_buf_printf(&b, k ? ",%u" : "%u", (unsigned char)p[k]);
                    srv_buf_put(&b, "]", 1);
                }
                srv_buf_put(&b, "}", 1);
            } else {
                srv_buf_printf(&b, "%d", (int)q->ids[i]);
            }
        }
        if (tei) srv_buf_put(&b, "]", 1);
    }
    srv_buf_puts(&b, tei ? "]\n" : "]}\n");
    return srv_buf_take(&b, len);
}

char *srv_api_detokenize_json(const char *text, size_t text_len, size_t *len) {
    srv_buf b = {0};
    if (!srv_buf_reserve(&b, text_len * 6 + 32)) return NULL;
    srv_buf_puts(&b, "{\"content\":");
    srv_buf_json_string(&b, text, text_len);
    srv_buf_puts(&b, "}\n");
    return srv_buf_take(&b, len);
}

/* ---- model descriptions ------------------------------------------------ */

static void put_model_object(srv_buf *b, const srv_model_card *m) {
    srv_buf_puts(b, "{\"id\":");
    srv_buf_json_string(b, m->id, strlen(m->id));
    srv_buf_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"spectral\"", (long long)m->created);
    /* llama-server's meta, in spectral-embed's and Python's names: n_embd the
     * token-state width, n_pooled an embedding's length; then what the embedding
     * is made of (n_lexical, lexical_scale) and the lengths 'dimensions' takes. */
    srv_buf_printf(b, ",\"meta\":{\"n_embd\":%lld,\"n_pooled\":%lld,\"n_vocab\":%lld,\"n_ctx_train\":%lld,"
                      "\"max_tokens\":%lld,\"n_params\":%llu,\"n_lexical\":%lld,\"lexical_scale\":%g,\"dimensions\":[",
                   (long long)m->n_embd, (long long)m->n_pooled, (long long)m->n_vocab, (long long)m->n_ctx_train,
                   (long long)m->max_tokens, (unsigned long long)m->n_params, (long long)m->n_lexical,
                   m->lexical_scale);
    for (int i = 0; i < m->n_dimensions; i++) srv_buf_printf(b, "%s%d", i ? "," : "", (int)m->dimensions[i]);
    srv_buf_puts(b, "],\"arch\":");
    srv_buf_json_string(b, m->arch, strlen(m->arch));
    srv_buf_puts(b, "}}");
}

char *srv_api_models_json(const srv_model_card *m, bool one, size_t *len) {
    srv_buf b = {0};
    if (!one) srv_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    put_model_object(&b, m);
    srv_buf_puts(&b, one ? "\n" : "]}\n");
    return srv_buf_take(&b, len);
}

char *srv_api_info_json(const srv_model_card *m, size_t *len) {
    srv_buf b = {0};
    srv_buf_puts(&b, "{\"model_id\":");
    srv_buf_json_string(&b, m->id, strlen(m->id));
    srv_buf_puts(&b, ",\"model_sha\":null,\"model_dtype\":\"float32\",\"served_model_name\":");
    srv_buf_json_string(&b, m->id, strlen(m->id));
    srv_buf_printf(&b, ",\"model_type\":{\"embedding\":{\"pooling\":\"%s\"}}", m->pooling);
    srv_buf_printf(&b, ",\"max_concurrent_requests\":%lld,\"max_input_length\":%lld,\"max_batch_tokens\":%lld,"
                       "\"max_batch_requests\":null,\"max_client_batch_size\":%lld,\"auto_truncate\":%s,"
                       "\"tokenization_workers\":%lld,\"version\":",
                   (long long)m->queue, (long long)m->max_tokens, (long long)m->batch_tokens, (long long)m->max_inputs,
                   m->auto_truncate ? "true" : "false", (long long)m->http_threads);
    srv_buf_json_string(&b, m->version, strlen(m->version));
    srv_buf_puts(&b, ",\"sha\":null,\"docker_label\":null}\n");
    return srv_buf_take(&b, len);
}

char *srv_api_props_json(const srv_model_card *m, size_t *len) {
    srv_buf b = {0};
    srv_buf_printf(&b, "{\"default_generation_settings\":{\"n_ctx\":%lld,\"params\":{}},\"total_slots\":%lld,"
                       "\"model_path\":",
                   (long long)m->max_tokens, (long long)m->parallel);
    srv_buf_json_string(&b, m->file, strlen(m->file));
    srv_buf_puts(&b, ",\"chat_template\":\"\",\"modalities\":{\"vision\":false,\"audio\":false},\"build_info\":");
    char build[96];
    snprintf(build, sizeof build, "spectral %s", m->version);
    srv_buf_json_string(&b, build, strlen(build));
    srv_buf_puts(&b, ",\"is_sleeping\":false}\n");
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
