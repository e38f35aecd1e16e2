/* server_api.h - the OpenAI embeddings wire format for spectral-server:
 * parsing a POST /v1/embeddings body and writing responses and errors.
 * No HTTP and no model here, so the libFuzzer harness
 * (tests/fuzz_server_request.c) runs the parser on its own.
 *
 * Usage:
 *
 *     srv_api_limits lim = {.n_vocab = 30522, .max_inputs = 2048};
 *     srv_embed_request req;
 *     srv_api_error err;
 *     if (srv_api_parse_embed(body, body_len, &lim, &req, &err)) {
 *         char *json = srv_api_error_json(&err);     // {"error":{...}}, err.status
 *         ...
 *     }
 *     for (int64_t i = 0; i < req.n_inputs; i++)
 *         req.inputs[i].text ? tokenize(req.inputs[i].text, req.inputs[i].len)
 *                            : use(req.inputs[i].ids, req.inputs[i].n_ids);
 *     srv_embed_request_free(&req);
 *
 * Thread safety: no shared state; every function may run on any thread at
 * once on different objects. Errors: functions return 0 on success; a
 * rejected request fills an srv_api_error (HTTP status, OpenAI type and code,
 * message); out of memory is reported the same way (status 500). */
#ifndef SPECTRAL_SERVER_API_H
#define SPECTRAL_SERVER_API_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer; on allocation failure it stops growing and sets
 * failed, so writers need to check once at the end. */
typedef struct {
    char *data;
    size_t len, cap;
    bool failed;
} srv_buf;

void srv_buf_put(srv_buf *b, const void *data, size_t len);
void srv_buf_puts(srv_buf *b, const char *s);
void srv_buf_printf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal (quotes included); bytes that are not valid UTF-8
 * become U+FFFD, so the output always parses. */
void srv_buf_json_string(srv_buf *b, const char *s, size_t len);
/* Takes the data (NUL-terminated) and leaves b empty; NULL if it failed. */
char *srv_buf_take(srv_buf *b, size_t *len);
void srv_buf_free(srv_buf *b);

/* An error in the OpenAI shape:
 * {"error":{"message":..., "type":..., "param":..., "code":...}} */
typedef struct {
    int status;        /* HTTP status */
    const char *type;  /* "invalid_request_error", "server_error", ... */
    const char *param; /* the offending field, or NULL (JSON null) */
    const char *code;  /* a short machine-readable code, or NULL */
    char message[512];
} srv_api_error;

/* As srv_api_set_error, with the message arguments as a va_list. */
void srv_api_set_errorv(srv_api_error *e, int status, const char *type, const char *param,
                        const char *code, const char *fmt, va_list ap);
void srv_api_set_error(srv_api_error *e, int status, const char *type, const char *param,
                      const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The error's JSON body (malloc'd), or NULL when out of memory. */
char *srv_api_error_json(const srv_api_error *e, size_t *len);

typedef struct {
    int32_t n_vocab;    /* token ids must be in [0, n_vocab) */
    int64_t max_inputs; /* inputs per request (OpenAI allows 2048) */
} srv_api_limits;

/* One input: text (UTF-8, may contain NUL; not NUL-terminated) or token ids. */
typedef struct {
    char *text;
    size_t len;
    int32_t *ids;
    int64_t n_ids;
} srv_embed_input;

typedef struct {
    srv_embed_input *inputs;
    int64_t n_inputs;
    bool base64; /* encoding_format "base64" (default "float") */
} srv_embed_request;

/* Parses and validates a /v1/embeddings body: an object with "input" (a
 * string, an array of strings, an array of token ids or an array of arrays
 * of token ids; nothing empty), optional "model" (a string; which model
 * answers is the server's choice), "encoding_format" ("float" or "base64"),
 * "dimensions" (only the model's own, checked by the caller) and "user"
 * (a string, ignored); other keys are ignored, as OpenAI's clients add
 * their own. The body must be valid UTF-8 JSON without duplicate keys.
 * Returns 0 and fills *out, or -1 and fills *err (out is then empty).
 * *dimensions is set to the requested value or 0 when absent (may be NULL). */
int srv_api_parse_embed(const char *body, size_t len, const srv_api_limits *lim,
                       srv_embed_request *out, int64_t *dimensions, srv_api_error *err);
void srv_embed_request_free(srv_embed_request *r);

/* The /v1/embeddings response: n vectors of n_embd floats, as JSON numbers
 * printed with %.9g (which round-trips float32 exactly) or as base64 of the
 * little-endian float32 bytes. NULL when out of memory. */
char *srv_api_embeddings_json(const float *vectors, int64_t n, int64_t n_embd, bool base64,
                             const char *model_id, int64_t prompt_tokens, size_t *len);

/* Constant-time comparison of an Authorization header value with
 * "Bearer KEY": the time depends on the key's length only, never on where
 * the header first differs. NULL header means no header. */
bool srv_api_bearer_ok(const char *header, const char *key);

#endif
