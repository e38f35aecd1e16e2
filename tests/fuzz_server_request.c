/* libFuzzer harness over spectral-server's request parser and response
 * writers (tools/server/server_api.c): any bytes as a /v1/embeddings body, as an
 * Authorization header and as a string to escape. Besides "no crash, no
 * leak, no undefined behaviour" (ASan + UBSan), it checks properties:
 * everything the writers produce parses as JSON, and a parsed request
 * holds only what the limits allow. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server_api.h"

static void must_parse(const char *json, size_t len, const char *what) {
    if (!json) return; /* out of memory: allowed */
    json_error_t e;
    json_t *v = json_loadb(json, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &e);
    if (!v) {
        fprintf(stderr, "%s is not valid JSON: %s\n%.*s\n", what, e.text, (int)(len > 400 ? 400 : len), json);
        abort();
    }
    json_decref(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const srv_api_limits lim = {.n_vocab = 1000, .max_inputs = 64};
    srv_embed_request req;
    srv_api_error err;
    int64_t dims = 0;
    if (srv_api_parse_embed((const char *)data, size, &lim, &req, &dims, &err) == 0) {
        if (req.n_inputs < 1 || req.n_inputs > lim.max_inputs) abort();
        int64_t total = 0;
        for (int64_t i = 0; i < req.n_inputs; i++) {
            const srv_embed_input *in = &req.inputs[i];
            if (!!in->text == !!in->ids) abort(); /* exactly one of the two */
            if (in->text && in->len == 0) abort();
            if (in->ids && in->n_ids < 1) abort();
            for (int64_t k = 0; in->ids && k < in->n_ids; k++)
                if (in->ids[k] < 0 || in->ids[k] >= lim.n_vocab) abort();
            total += in->ids ? in->n_ids : (int64_t)in->len;
        }
        /* The answer for it, both encodings, must be JSON. */
        const int64_t n_embd = 3;
        float *v = calloc((size_t)(req.n_inputs * n_embd), sizeof *v);
        if (v) {
            for (int64_t i = 0; i < req.n_inputs * n_embd; i++) v[i] = (float)i / 7.0f - 1.0f;
            size_t len = 0;
            char *out = srv_api_embeddings_json(v, req.n_inputs, n_embd, req.base64, "model", total, &len);
            must_parse(out, len, "the embeddings response");
            free(out);
            free(v);
        }
        srv_embed_request_free(&req);
    } else {
        if (err.status != 400 && err.status != 500) abort();
        if (req.inputs || req.n_inputs) abort(); /* left empty */
        size_t len = 0;
        char *out = srv_api_error_json(&err, &len);
        must_parse(out, len, "the error response");
        free(out);
    }
    /* The bytes as a string inside JSON, and as an Authorization header. */
    srv_buf b = {0};
    srv_buf_json_string(&b, (const char *)data, size);
    size_t len = 0;
    char *s = srv_buf_take(&b, &len);
    must_parse(s, len, "an escaped string");
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
