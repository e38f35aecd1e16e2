/* libFuzzer harness over spectral-server's wire formats
 * (tools/server/server_api.c): any bytes as the body of every route that
 * takes one (the embedding requests of OpenAI, TEI and llama-server,
 * /tokenize, /detokenize), as an Authorization header and as a string to
 * escape. Besides "no crash, no leak, no undefined behaviour" (ASan +
 * UBSan), it checks properties: everything the writers produce is JSON and
 * within the bounds the server charges for it; a parsed request holds only
 * what the limits allow; errors have a status their protocol uses; and the
 * request-memory accounting (server_budget.c) gives back every byte it took,
 * also when a small budget refuses a parse half-way.
 *
 * Built twice (tests/server.cmake): with libFuzzer in the fuzz phase, and
 * with tests/fuzz_replay.c's main in every build, where
 * fuzz_server_request_smoke replays the seeds and mutations of them. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server_api.h"

static void must_parse(const char *json, size_t len, size_t bound, const char *what) {
    if (!json) return; /* out of memory: allowed */
    json_error_t e;
    json_t *v = json_loadb(json, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &e);
    if (!v) {
        fprintf(stderr, "%s is not valid JSON: %s\n%.*s\n", what, e.text, (int)(len > 400 ? 400 : len), json);
        abort();
    }
    json_decref(v);
    if (bound && len > bound) {
        fprintf(stderr, "%s: %zu bytes, over its bound of %zu\n", what, len, bound);
        abort();
    }
}

static void check_error(const srv_api_error *err) {
    static const int allowed[] = {400, 413, 500, 503};
    bool ok = false;
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) ok |= err->status == allowed[i];
    if (!ok) abort();
    for (int p = SRV_PROTO_OPENAI; p <= SRV_PROTO_LLAMA; p++) {
        size_t len = 0;
        int status = 0;
        char *out = srv_api_error_json(err, (srv_proto)p, &status, &len);
        if (out && (status < 400 || status > 599)) abort();
        must_parse(out, len, 0, "an error");
        free(out);
    }
}

static void embed_request(srv_proto proto, const uint8_t *data, size_t size, const srv_api_limits *lim,
                          srv_charge *charge) {
    srv_embed_request req;
    srv_api_error err;
    int64_t dims = 0;
    if (srv_api_parse_embed(proto, (const char *)data, size, lim, charge, &req, &dims, &err)) {
        if (req.inputs || req.n_inputs) abort(); /* left empty */
        check_error(&err);
        return;
    }
    if (req.n_inputs < 1 || req.n_inputs > lim->max_inputs) abort();
    if (req.truncate < -1 || req.truncate > 1 || req.norm < -1 || dims < 0) abort();
    srv_input_note *notes = calloc((size_t)req.n_inputs, sizeof *notes);
    int64_t total = 0;
    for (int64_t i = 0; i < req.n_inputs; i++) {
        const srv_embed_input *in = &req.inputs[i];
        if (!!in->text == !!in->ids) abort(); /* exactly one of the two */
        if (in->text && in->len == 0) abort();
        if (in->ids && in->n_ids < 1) abort();
        for (int64_t k = 0; in->ids && k < in->n_ids; k++)
            if (in->ids[k] < 0 || in->ids[k] >= lim->n_vocab) abort();
        const int64_t n = in->ids ? in->n_ids : (int64_t)in->len;
        total += n;
        if (notes) notes[i] = (srv_input_note){n > 4 ? 4 : n, n}; /* some truncated, some past "training" */
    }
    /* The answer in every shape, both encodings, must be JSON within its bound. */
    const int64_t width = 3;
    float *v = calloc((size_t)(req.n_inputs * width), sizeof *v);
    for (int64_t i = 0; v && i < req.n_inputs * width; i++) v[i] = (float)i / 7.0f - 1.0f;
    for (int b64 = 0; v && b64 < 2; b64++) {
        size_t len = 0;
        char *out = srv_api_embed_json(proto, v, req.n_inputs, width, b64, "model \"x\"", total, notes, 2, &len);
        must_parse(out, len, srv_api_embed_bound(proto, req.n_inputs, width, b64, notes != NULL), "an embedding answer");
        free(out);
    }
    free(v);
    free(notes);
    srv_embed_request_free(&req);
}

/* /tokenize: the texts' bytes stand for their tokens (id = byte, piece = the byte). */
static void tokenize_request(const uint8_t *data, size_t size, const srv_api_limits *lim, srv_charge *charge) {
    srv_tokenize_request req;
    srv_api_error err;
    if (srv_api_parse_tokenize((const char *)data, size, lim, charge, &req, &err)) {
        if (req.texts || req.n_texts) abort();
        check_error(&err);
        return;
    }
    if (req.n_texts < 1 || req.n_texts > lim->max_inputs || (req.proto == SRV_PROTO_LLAMA && req.n_texts != 1)) abort();
    srv_token_seq *seqs = calloc((size_t)req.n_texts, sizeof *seqs);
    int32_t **ids = calloc((size_t)req.n_texts, sizeof *ids);
    int64_t **offs = calloc((size_t)req.n_texts, sizeof *offs);
    bool **special = calloc((size_t)req.n_texts, sizeof *special);
    bool ok = seqs && ids && offs && special;
    for (int64_t s = 0; ok && s < req.n_texts; s++) {
        const srv_embed_input *t = &req.texts[s];
        if (!t->text || t->ids) abort();
        const int64_t n = (int64_t)t->len;
        ids[s] = malloc((size_t)(n + 1) * sizeof **ids);
        offs[s] = malloc((size_t)(n + 1) * sizeof **offs);
        special[s] = malloc((size_t)(n + 1) * sizeof **special);
        if (!ids[s] || !offs[s] || !special[s]) {
            ok = false;
            break;
        }
        for (int64_t i = 0; i < n; i++) {
            ids[s][i] = (unsigned char)t->text[i];
            offs[s][i] = i;
            special[s][i] = t->text[i] == '[';
        }
        offs[s][n] = n;
        seqs[s] = (srv_token_seq){ids[s], n, t->text, offs[s], special[s]};
    }
    if (ok) {
        size_t len = 0;
        char *out = srv_api_tokens_json(&req, seqs, &len);
        must_parse(out, len, srv_api_tokens_bound(seqs, req.n_texts), "a tokenize answer");
        free(out);
    }
    for (int64_t s = 0; s < req.n_texts; s++) {
        if (ids) free(ids[s]);
        if (offs) free(offs[s]);
        if (special) free(special[s]);
    }
    free(seqs);
    free(ids);
    free(offs);
    free(special);
    srv_tokenize_request_free(&req);
}

static void detokenize_request(const uint8_t *data, size_t size, const srv_api_limits *lim, srv_charge *charge) {
    int32_t *ids = NULL;
    int64_t n = 0;
    srv_api_error err;
    if (srv_api_parse_detokenize((const char *)data, size, lim, charge, &ids, &n, &err)) {
        if (ids || n) abort();
        check_error(&err);
        return;
    }
    char *text = malloc((size_t)n + 1);
    for (int64_t i = 0; text && i < n; i++) {
        if (ids[i] < 0 || ids[i] >= lim->n_vocab) abort();
        text[i] = (char)ids[i]; /* any bytes, valid UTF-8 or not */
    }
    if (text) {
        size_t len = 0;
        char *out = srv_api_detokenize_json(text, (size_t)n, &len);
        must_parse(out, len, (size_t)n * 6 + 32, "a detokenize answer");
        free(out);
    }
    free(text);
    srv_charged_free(ids);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    srv_api_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const srv_api_limits lim = {.n_vocab = 1000, .max_inputs = 64};
    /* Each route with an ample budget, then with one small enough that
     * larger bodies are refused part-way: either way every byte comes back. */
    for (int round = 0; round < 2; round++) {
        srv_budget budget;
        srv_budget_init(&budget, round ? 4096 : (size_t)1 << 30);
        srv_charge charge;
        srv_charge_init(&charge, &budget);
        for (int p = SRV_PROTO_OPENAI; p <= SRV_PROTO_LLAMA; p++) embed_request((srv_proto)p, data, size, &lim, &charge);
        tokenize_request(data, size, &lim, &charge);
        detokenize_request(data, size, &lim, &charge);
        if (atomic_load(&charge.held) || srv_budget_used(&budget)) {
            fprintf(stderr, "request memory not given back: %zu bytes held\n", (size_t)atomic_load(&charge.held));
            abort();
        }
    }
    /* The bytes as a string inside JSON, and as an Authorization header. */
    srv_buf b = {0};
    srv_buf_json_string(&b, (const char *)data, size);
    size_t len = 0;
    char *s = srv_buf_take(&b, &len);
    must_parse(s, len, 0, "an escaped string");
    free(s);
    char *header = malloc(size + 1);
    if (header) {
        memcpy(header, data, size);
        header[size] = 0;
        const bool ok = srv_api_bearer_ok(header, "key-123");
        const bool want = strlen(header) == 14 && !strncasecmp(header, "bearer ", 7) && !strcmp(header + 7, "key-123");
        if (ok != want) abort();
        free(header);
    }
    return 0;
}
