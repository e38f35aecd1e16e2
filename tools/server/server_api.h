/* server_api.h - the wire formats of spectral-server: the request bodies and
 * answers of the three embedding protocols it speaks (OpenAI's
 * /v1/embeddings; text-embeddings-inference's /embed and /tokenize;
 * llama-server's /embedding, /tokenize and /detokenize), their error shapes,
 * and the model descriptions (/v1/models, /info, /props). No HTTP and no
 * model here, so the libFuzzer harness (tests/fuzz_server_request.c) runs
 * the parsers on their own.
 *
 * Usage:
 *
 *     srv_api_init();                          // once, before threads: counted jansson allocations
 *     srv_api_limits lim = {.n_vocab = 30522, .max_inputs = 2048};
 *     srv_embed_request req;
 *     srv_api_error err;
 *     if (srv_api_parse_embed(SRV_PROTO_OPENAI, body, body_len, &lim, charge, &req, &dims, &err)) {
 *         int status;
 *         char *json = srv_api_error_json(&err, SRV_PROTO_OPENAI, &status, &len);
 *         ...
 *     }
 *     for (int64_t i = 0; i < req.n_inputs; i++)
 *         req.inputs[i].text ? tokenize(req.inputs[i].text, req.inputs[i].len)
 *                            : use(req.inputs[i].ids, req.inputs[i].n_ids);
 *     srv_embed_request_free(&req);
 *
 * Memory: what a parse allocates (jansson's tree, the inputs copied out of
 * it) is counted against the request's charge (server_budget.h; NULL: not
 * counted); past the budget the parse fails with a 503 "server_busy" error
 * (413 when the request alone could never fit).
 *
 * Thread safety: no shared state but the allocator hooks srv_api_init sets;
 * every function may run on any thread at once on different objects.
 * Errors: functions return 0 on success; a rejected request fills an
 * srv_api_error (HTTP status, OpenAI type and code, message); out of memory
 * is reported the same way (status 500). */
#ifndef SPECTRAL_SERVER_API_H
#define SPECTRAL_SERVER_API_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server_budget.h"

/* A growable byte buffer; on allocation failure it stops growing and sets
 * failed, so writers need to check once at the end. */
typedef struct {
    char *data;
    size_t len, cap;
    bool failed;
} srv_buf;

/* Room for extra more bytes (one allocation when the size is known). */
bool srv_buf_reserve(srv_buf *b, size_t extra);
void srv_buf_put(srv_buf *b, const void *data, size_t len);
void srv_buf_puts(srv_buf *b, const char *s);
void srv_buf_printf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal (quotes included); bytes that are not valid UTF-8
 * become U+FFFD, so the output always parses. */
void srv_buf_json_string(srv_buf *b, const char *s, size_t len);
/* Takes the data (NUL-terminated) and leaves b empty; NULL if it failed. */
char *srv_buf_take(srv_buf *b, size_t *len);
void srv_buf_free(srv_buf *b);

/* Whose schema a request and its answer follow. */
typedef enum {
    SRV_PROTO_OPENAI, /* POST /v1/embeddings */
    SRV_PROTO_TEI,    /* text-embeddings-inference: POST /embed, POST /, POST /tokenize with "inputs" */
    SRV_PROTO_LLAMA,  /* llama-server: POST /embedding, /tokenize with "content", /detokenize */
} srv_proto;

/* An error in OpenAI's terms; srv_api_error_json writes it in each
 * protocol's shape. */
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
/* The error's JSON body (malloc'd; NULL when out of memory) and the status
 * the protocol gives it:
 *   OPENAI {"error":{"message","type","param","code"}}, the status as set;
 *   TEI    {"error":"...","error_type":"validation|empty|overloaded|unhealthy|backend"}
 *          with TEI's statuses (422 for a request it cannot take, 429 when full);
 *   LLAMA  {"error":{"code":STATUS,"message":"...","type":"invalid_request_error|..."}}. */
char *srv_api_error_json(const srv_api_error *e, srv_proto proto, int *status, size_t *len);

/* Installs jansson's allocator hooks (counted against the charge of the
 * parse under way). Call once, before any thread parses. */
void srv_api_init(void);

typedef struct {
    int32_t n_vocab;    /* token ids must be in [0, n_vocab) */
    int64_t max_inputs; /* inputs per request (OpenAI allows 2048) */
} srv_api_limits;

/* One input: text (UTF-8, may contain NUL; not NUL-terminated) or token ids;
 * both counted blocks (srv_charged_free). */
typedef struct {
    char *text;
    size_t len;
    int32_t *ids;
    int64_t n_ids;
} srv_embed_input;

typedef struct {
    srv_embed_input *inputs;
    int64_t n_inputs;
    bool base64;  /* OPENAI: encoding_format "base64" (default "float") */
    int truncate; /* "truncate": 1 true, 0 false, -1 not given (the server's default) */
    int norm;     /* how vectors are normalized, as llama-server's embd_normalize numbers it:
                     2 L2 (every protocol's default), -1 none (TEI's "normalize": false),
                     0 max-abs scaled to int16, 1 taxicab, p > 2 the p-norm */
} srv_embed_request;

/* Parses and validates an embedding request body:
 *   OPENAI {"input", "model", "encoding_format", "dimensions", "user", "truncate"}
 *   TEI    {"inputs", "truncate", "truncation_direction" ("right" only),
 *           "normalize", "prompt_name" (null only), "dimensions"}
 *   LLAMA  {"content" or "input", "embd_normalize"}
 * The input is a string, an array of strings, an array of token ids or an
 * array of arrays of token ids; nothing empty. Other keys are ignored, as
 * the protocols' clients add their own. The body must be valid UTF-8 JSON
 * without duplicate keys. Returns 0 and fills *out, or -1 and fills *err
 * (out is then empty). *dimensions is set to the requested value or 0 when
 * absent (may be NULL). */
int srv_api_parse_embed(srv_proto proto, const char *body, size_t len, const srv_api_limits *lim,
                        srv_charge *charge, srv_embed_request *out, int64_t *dimensions,
                        srv_api_error *err);
void srv_embed_request_free(srv_embed_request *r);

/* POST /tokenize: TEI's {"inputs": str | [str], "add_special_tokens"} or
 * llama-server's {"content": str, "add_special", "with_pieces"} (the key
 * tells which). */
typedef struct {
    srv_proto proto;
    srv_embed_input *texts; /* text only */
    int64_t n_texts;
    bool batch;       /* TEI: "inputs" was an array */
    bool add_special; /* TEI default true, llama-server default false */
    bool with_pieces; /* llama-server */
} srv_tokenize_request;

int srv_api_parse_tokenize(const char *body, size_t len, const srv_api_limits *lim, srv_charge *charge,
                           srv_tokenize_request *out, srv_api_error *err);
void srv_tokenize_request_free(srv_tokenize_request *r);

/* POST /detokenize (llama-server): {"tokens": [ids]}; ids a counted block. */
int srv_api_parse_detokenize(const char *body, size_t len, const srv_api_limits *lim, srv_charge *charge,
                             int32_t **ids, int64_t *n_ids, srv_api_error *err);

/* ---- answers ---------------------------------------------------------- */

/* What the answer says about one input's length: tokens embedded, tokens
 * the text has (more when truncated). */
typedef struct {
    int64_t n_tokens, n_full;
} srv_input_note;

/* An upper bound on srv_api_embed_json's length (for the memory charge). */
size_t srv_api_embed_bound(srv_proto proto, int64_t n, int64_t width, bool base64, bool notes);
/* The embeddings of n inputs (n x width floats, %.9g, which round-trips
 * float32; or OPENAI's base64 of the little-endian bytes):
 *   OPENAI {"object":"list","data":[{"object":"embedding","index":i,"embedding":...}],
 *           "model":ID,"usage":{...}} and, when an input was truncated or is
 *           longer than n_ctx_train, "warnings":[{"index","code","message",...}]
 *   TEI    [[...], ...]
 *   LLAMA  [{"index":i,"embedding":[[...]]}, ...]
 * notes: per input, or NULL. NULL when out of memory. */
char *srv_api_embed_json(srv_proto proto, const float *vectors, int64_t n, int64_t width, bool base64,
                         const char *model_id, int64_t prompt_tokens, const srv_input_note *notes,
                         int64_t n_ctx_train, size_t *len);

/* One tokenized text: ids, each id's piece (pieces[piece_off[i] ..
 * piece_off[i+1])) and whether it is a control token. */
typedef struct {
    const int32_t *ids;
    int64_t n;
    const char *pieces;
    const int64_t *piece_off;
    const bool *special;
} srv_token_seq;

/* An upper bound on srv_api_tokens_json's length. */
size_t srv_api_tokens_bound(const srv_token_seq *seqs, int64_t n_seqs);
/* TEI: [[{"id","text","special","start":null,"stop":null}, ...], ...] (the text
 * without a word's leading space; offsets are not tracked);
 * llama-server: {"tokens":[ids]} or, with_pieces, [{"id","piece"}] (a piece that is
 * not UTF-8 as its list of bytes). */
char *srv_api_tokens_json(const srv_tokenize_request *req, const srv_token_seq *seqs, size_t *len);
/* llama-server's {"content":TEXT}. */
char *srv_api_detokenize_json(const char *text, size_t text_len, size_t *len);

/* What the server says about itself and its model. */
typedef struct {
    const char *id;       /* --alias or the file name */
    const char *file;     /* the model file's name (no directory) */
    const char *arch;
    const char *pooling;  /* "mean", "cls", "last" */
    const char *version;  /* spectral's */
    int64_t created;      /* Unix time the server started */
    int64_t n_embd;       /* token-state width */
    int64_t n_pooled;     /* an embedding's length */
    int64_t n_lexical;    /* its lexical sketch's length (0: none) */
    double lexical_scale; /* the sketch's weight next to the unit-length dense part */
    const int32_t *dimensions; /* the lengths 'dimensions' accepts, ascending, n_pooled last */
    int n_dimensions;
    int64_t n_vocab;
    int64_t n_ctx_train;  /* the length the model was trained at */
    int64_t max_tokens;   /* the server's --max-tokens */
    uint64_t n_params;
    int64_t parallel, queue, batch_tokens, max_inputs, http_threads;
    bool auto_truncate;
} srv_model_card;

/* OpenAI's model object (one = true) or the list of it (/v1/models). */
char *srv_api_models_json(const srv_model_card *m, bool one, size_t *len);
/* TEI's GET /info. */
char *srv_api_info_json(const srv_model_card *m, size_t *len);
/* llama-server's GET /props. */
char *srv_api_props_json(const srv_model_card *m, size_t *len);

/* Constant-time comparison of an Authorization header value with
 * "Bearer KEY": the time depends on the key's length only, never on where
 * the header first differs. NULL header means no header. */
bool srv_api_bearer_ok(const char *header, const char *key);

#endif
