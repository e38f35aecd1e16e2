/* server_http.c - spectral-server's requests, from headers to answer
 * (see server.h): routing, authentication, CORS, receiving bodies within
 * --max-body and --request-mem, the embedding routes of the three protocols
 * (tokenized and checked here, computed by server_pool.c), tokenizing and
 * detokenizing, the model descriptions, and every answer. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "server.h"

/* What a request's body is for. */
typedef enum { DO_NOTHING, DO_EMBED, DO_TOKENIZE, DO_DETOKENIZE } body_use;

/* One request's state (libmicrohttpd's per-request pointer). */
typedef struct {
    enum { ST_BODY, ST_WAIT, ST_DONE } stage;
    srv_endpoint ep;
    srv_proto proto; /* the shape of its answer and errors */
    body_use use;
    bool before_drain;
    double t0;
    srv_charge charge; /* --request-mem: its body, parse, tokens, vectors, answer */
    char *body;        /* a counted block */
    size_t len, cap;
    bool refused;      /* the body is read and dropped, then refusal is the answer */
    srv_api_error refusal;
    size_t discarded;
    srv_job *job;
    bool base64;
    int norm;     /* llama-server's embd_normalize numbering (srv_embed_request.norm) */
    int64_t dims; /* 'dimensions' asked for, 0: all */
    int64_t prompt_tokens;
    srv_input_note *notes; /* per input: tokens embedded and the text's own (a counted block) */
    int64_t n_truncated, n_over_training;
    const char *cors_origin; /* what Access-Control-Allow-Origin says, or NULL */
    struct MHD_Connection *conn;
    srv_conn *watched;
} request;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static srv_conn *watched_conn(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* ---- answers ----------------------------------------------------------- */

typedef struct {
    const char *name, *value;
} header;

/* Queues body (malloc'd, taken) with status and up to four more headers.
 * Returns libmicrohttpd's verdict. */
static enum MHD_Result respond(server *s, struct MHD_Connection *c, request *r, int status, char *body,
                               size_t len, const char *content_type, const header *extra, int n_extra) {
    if (!body) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":\"out_of_memory\"}}\n";
        body = strdup(oom);
        if (!body) return MHD_NO;
        len = sizeof oom - 1;
        status = 500;
        n_extra = 0;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    for (int i = 0; i < n_extra; i++)
        if (extra[i].name) MHD_add_response_header(resp, extra[i].name, extra[i].value);
    if (r->cors_origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->cors_origin);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                "Retry-After, X-Compute-Tokens, X-Truncated-Inputs, X-Over-Training-Length");
        if (strcmp(r->cors_origin, "*")) MHD_add_response_header(resp, "Vary", "Origin");
    }
    /* While draining, keep-alive connections are closed after this answer. */
    if (atomic_load(&s->draining)) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    const enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->stage = ST_DONE;
    srv_watch_set(s->watch, r->watched, SRV_CONN_ANSWERING);
    srv_metrics_response(&s->metrics, r->ep, status, now_s() - r->t0);
    if (s->o.verbose)
        fprintf(stderr, "spectral-server: %s %d %.1f ms\n", srv_endpoint_name(r->ep), status, (now_s() - r->t0) * 1e3);
    return ok;
}

static enum MHD_Result respond_json(server *s, struct MHD_Connection *c, request *r, int status, char *body,
                                    size_t len) {
    return respond(s, c, r, status, body, len, "application/json", NULL, 0);
}

/* The error in the request's protocol, with the headers its status calls for. */
static enum MHD_Result respond_error(server *s, struct MHD_Connection *c, request *r, const srv_api_error *e,
                                     const char *allow) {
    size_t len = 0;
    int status = e->status;
    char *body = srv_api_error_json(e, r->proto, &status, &len);
    const bool busy = status == 503 || status == 429;
    /* A refusal of the framing itself ends the connection (request smuggling defences). */
    const bool close = e->code && !strcmp(e->code, "conflicting_length");
    const header h[] = {
        {busy ? MHD_HTTP_HEADER_RETRY_AFTER : NULL, "1"},
        {status == 401 ? MHD_HTTP_HEADER_WWW_AUTHENTICATE : NULL, "Bearer"},
        {status == 405 ? MHD_HTTP_HEADER_ALLOW : NULL, allow},
        {close ? MHD_HTTP_HEADER_CONNECTION : NULL, "close"},
    };
    return respond(s, c, r, status, body, len, "application/json", h, 4);
}

static int fail(srv_api_error *err, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(srv_api_error *err, int status, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    srv_api_set_errorv(err, status, status >= 500 ? "server_error" : "invalid_request_error",
                       status == 413 || status == 400 ? "input" : NULL, code, fmt, ap);
    va_end(ap);
    return -1;
}

/* A take from --request-mem failed: 413 when the request alone is over
 * it, else 503 (retry). Returns -1. */
static int memory_refusal(server *s, request *r, srv_api_error *err) {
    srv_metrics_rejected(&s->metrics, SRV_REJECT_BUSY);
    if (atomic_load(&r->charge.never_fits))
        return fail(err, 413, "request_too_large",
                    "this request needs more memory than the server gives all requests together "
                    "(%zu bytes, --request-mem)", s->budget.limit);
    srv_api_set_error(err, 503, "server_error", NULL, "server_busy",
                      "the server's request memory (--request-mem) is taken by other requests; retry later");
    return -1;
}

/* Takes n bytes of --request-mem for r, or sets err (memory_refusal). */
static int take_memory(server *s, request *r, size_t n, srv_api_error *err) {
    return srv_charge_take(&r->charge, n) ? 0 : memory_refusal(s, r, err);
}

/* A counted allocation failed: the budget's refusal, or out of memory. */
static int alloc_failure(server *s, request *r, srv_api_error *err) {
    if (atomic_load(&r->charge.refused)) return memory_refusal(s, r, err);
    return fail(err, 500, "out_of_memory", "out of memory");
}

/* ---- embeddings -------------------------------------------------------- */

static void on_job_done(srv_job *job, void *user) {
    (void)job;
    /* The connection is suspended until now, so it is still there. */
    MHD_resume_connection(((request *)user)->conn);
}

static void fmt_mib(size_t bytes, char *buf, size_t n) { snprintf(buf, n, "%.1f MiB", bytes / 1048576.0); }

/* Tokenizes and checks input i into *ids (malloc'd) and *n, with its note. */
static int prepare_input(server *s, request *r, srv_embed_input *in, int64_t i, bool truncate, int32_t **ids,
                         int64_t *n, srv_api_error *err) {
    int64_t full;
    if (in->ids) {
        full = *n = in->n_ids;
    } else {
        full = spectral_tokenize(s->model, in->text, in->len, NULL, 0);
        if (full < 0) return fail(err, 400, "invalid_input", "input[%lld] cannot be tokenized: %s", (long long)i, spectral_last_error());
        if (full == 0) return fail(err, 400, "empty_input", "input[%lld] gives no tokens", (long long)i);
        *n = truncate && full > s->max_tokens ? s->max_tokens : full;
    }
    if (*n > s->max_tokens) {
        srv_metrics_rejected(&s->metrics, SRV_REJECT_TOO_LARGE);
        return fail(err, 413, "input_too_long",
                    "input[%lld] has %lld tokens, more than this server's limit of %lld (--max-tokens; "
                    "\"truncate\": true embeds its first %lld)",
                    (long long)i, (long long)*n, (long long)s->max_tokens, (long long)s->max_tokens);
    }
    const size_t cap = srv_pool_context_limit(s->pool);
    if (cap) {
        const size_t need = srv_pool_memory_minimum(s->pool, *n);
        if (need > cap) {
            char b1[32], b2[32], b3[32];
            fmt_mib(need, b1, sizeof b1);
            fmt_mib(cap, b2, sizeof b2);
            fmt_mib(s->o.mem_limit, b3, sizeof b3);
            srv_metrics_rejected(&s->metrics, SRV_REJECT_TOO_LARGE);
            return fail(err, 413, "input_too_large",
                        "input[%lld] (%lld tokens) needs %zu bytes (%s) of activation memory; this "
                        "server gives each context %zu bytes (%s: --mem-limit %s / --parallel %d)",
                        (long long)i, (long long)*n, need, b1, cap, b2, b3, s->o.parallel);
        }
    }
    if (take_memory(s, r, (size_t)*n * sizeof **ids, err)) return -1;
    *ids = malloc((size_t)*n * sizeof **ids);
    if (!*ids) return fail(err, 500, "out_of_memory", "out of memory for input[%lld]'s tokens", (long long)i);
    if (in->ids) {
        memcpy(*ids, in->ids, (size_t)*n * sizeof **ids);
    } else {
        spectral_tokenize_params tp = spectral_tokenize_default_params();
        tp.max_tokens = *n < full ? *n : 0;
        if (spectral_tokenize_with(s->model, in->text, in->len, tp, *ids, *n) != *n)
            return fail(err, 500, "server_error", "input[%lld]: tokenizing twice gave different counts", (long long)i);
    }
    /* the tokens are all we keep while it waits */
    srv_charged_free(in->text);
    srv_charged_free(in->ids);
    in->text = NULL;
    in->ids = NULL;
    r->notes[i] = (srv_input_note){*n, full};
    r->n_truncated += *n < full;
    r->n_over_training += s->n_ctx_train > 0 && *n > s->n_ctx_train;
    return 0;
}

/* Tokenizes and checks every input; on success *job is ready to submit. */
static int prepare_job(server *s, request *r, srv_embed_request *req, srv_job **job, srv_api_error *err) {
    const int64_t n = req->n_inputs;
    const bool truncate = req->truncate >= 0 ? req->truncate : s->o.auto_truncate;
    int32_t **ids = calloc((size_t)n, sizeof *ids);
    int64_t *n_ids = calloc((size_t)n, sizeof *n_ids);
    int rc = 0;
    int64_t total = 0;
    if (!ids || !n_ids) rc = fail(err, 500, "out_of_memory", "out of memory");
    if (!rc && !(r->notes = srv_charged_alloc(&r->charge, (size_t)n * sizeof *r->notes)))
        rc = alloc_failure(s, r, err);
    for (int64_t i = 0; i < n && !rc; i++) {
        rc = prepare_input(s, r, &req->inputs[i], i, truncate, &ids[i], &n_ids[i], err);
        total += n_ids[i];
    }
    /* What the job holds from here to its answer: the vectors, a copy of
     * part of them for 'dimensions', the answer. */
    const size_t answer = srv_api_embed_bound(r->proto, n, s->n_embd, r->base64, true);
    if (!rc) rc = take_memory(s, r, (size_t)n * (size_t)s->n_embd * 2 * sizeof(float) + answer, err);
    if (!rc) {
        *job = srv_job_create(n, ids, n_ids, r->norm == 2, on_job_done, r);
        if (*job) {
            r->prompt_tokens = total;
            return 0;
        }
        rc = fail(err, 500, "out_of_memory", "out of memory");
    }
    for (int64_t i = 0; ids && i < n; i++) free(ids[i]);
    free(ids);
    free(n_ids);
    return rc;
}

/* llama-server's other embd_normalize values, on unnormalized vectors, as
 * its common_embd_normalize computes them: 0 max-abs scaled to int16's
 * range, p >= 1 the p-norm (1 taxicab). */
static void apply_norm(float *v, int64_t n, int p) {
    double sum = 0;
    if (p == 0) {
        for (int64_t i = 0; i < n; i++) sum = fmax(sum, fabs(v[i]));
        sum /= 32760.0;
    } else {
        for (int64_t i = 0; i < n; i++) sum += pow(fabs(v[i]), p);
        sum = pow(sum, 1.0 / p);
    }
    const float scale = sum > 0 ? (float)(1.0 / sum) : 0.0f;
    for (int64_t i = 0; i < n; i++) v[i] *= scale;
}

/* The whole body is in: parse, check, queue (suspending the connection). */
/* Whether 'dimensions' d is one of the lengths the model offers (server.dims). */
static bool offers_dims(const server *s, int64_t d) {
    for (int i = 0; i < s->n_dims; i++)
        if (s->dims[i] == d) return true;
    return false;
}

static enum MHD_Result embed_received(server *s, struct MHD_Connection *c, request *r) {
    srv_api_error err;
    const srv_api_limits lim = {.n_vocab = s->n_vocab, .max_inputs = s->o.max_inputs};
    srv_embed_request req;
    int64_t dims = 0;
    const int parsed = srv_api_parse_embed(r->proto, r->body ? r->body : "", r->len, &lim, &r->charge, &req, &dims, &err);
    srv_charged_free(r->body);
    r->body = NULL;
    if (parsed) {
        if (err.code && !strcmp(err.code, "server_busy")) srv_metrics_rejected(&s->metrics, SRV_REJECT_BUSY);
        return respond_error(s, c, r, &err, NULL);
    }
    if (dims && !offers_dims(s, dims)) {
        srv_embed_request_free(&req);
        char list[(SPECTRAL_MAX_PREFIXES + 1) * 13] = ""; /* ", " and up to 10 digits each */
        for (int i = 0, at = 0; i < s->n_dims; i++)
            at += snprintf(list + at, sizeof list - (size_t)at, "%s%d", i ? ", " : "", (int)s->dims[i]);
        srv_api_set_error(&err, 400, "invalid_request_error", "dimensions", "invalid_value",
                         "this model offers 'dimensions' %s", list);
        return respond_error(s, c, r, &err, NULL);
    }
    r->dims = dims;
    r->base64 = req.base64;
    r->norm = req.norm;
    srv_job *job = NULL;
    const int rc = prepare_job(s, r, &req, &job, &err);
    srv_embed_request_free(&req);
    if (rc) return respond_error(s, c, r, &err, NULL);
    if (srv_pool_reserve(s->pool)) {
        srv_job_free(job);
        srv_metrics_rejected(&s->metrics, SRV_REJECT_QUEUE_FULL);
        if (atomic_load(&s->draining))
            srv_api_set_error(&err, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
        else
            srv_api_set_error(&err, 503, "server_error", NULL, "queue_full",
                             "the server's queue is full (%d requests); retry later", s->o.queue);
        return respond_error(s, c, r, &err, NULL);
    }
    r->job = job;
    r->stage = ST_WAIT;
    r->conn = c;
    srv_watch_set(s->watch, r->watched, SRV_CONN_COMPUTING);
    /* Suspend before submitting: the job may be done (and resume called)
     * before this function returns. */
    MHD_suspend_connection(c);
    srv_pool_submit(s->pool, job);
    return MHD_YES;
}

/* Resumed: the job is done. */
static enum MHD_Result embed_answer(server *s, struct MHD_Connection *c, request *r) {
    srv_job *job = r->job;
    r->job = NULL;
    const char *msg = NULL;
    int64_t input = 0;
    const spectral_status st = srv_job_status(job, &msg, &input);
    enum MHD_Result ret;
    if (srv_job_cancelled(job)) {
        srv_api_error err;
        srv_api_set_error(&err, 503, "server_error", NULL, "shutting_down",
                          "the server is shutting down (--drain-timeout passed before this request ran)");
        ret = respond_error(s, c, r, &err, NULL);
    } else if (st == SPECTRAL_OK) {
        size_t len = 0;
        const int64_t n = srv_job_n_inputs(job);
        float *vectors = (float *)srv_job_vectors(job); /* the job is ours again: normalized in place */
        if (r->norm != 2 && r->norm != -1)
            for (int64_t i = 0; i < n; i++) apply_norm(vectors + i * s->n_embd, s->n_embd, r->norm);
        float *dense = NULL;
        int64_t width = s->n_embd;
        if (r->dims && r->dims < s->n_embd && n > 0) {
            /* A prefix of the dense part (the whole of it, or one the model was
             * trained for): its first values, unit length again. */
            width = r->dims;
            dense = malloc((size_t)(n * width) * sizeof *dense);
            for (int64_t i = 0; dense && i < n; i++) {
                const float *src = vectors + i * s->n_embd;
                double ss = 0;
                for (int64_t j = 0; j < width; j++) ss += (double)src[j] * src[j];
                const float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 1.0f;
                for (int64_t j = 0; j < width; j++) dense[i * width + j] = src[j] * inv;
            }
            vectors = dense;
        }
        char *body = vectors ? srv_api_embed_json(r->proto, vectors, n, width, r->base64, s->model_id,
                                                  r->prompt_tokens, r->notes, s->n_ctx_train, &len)
                             : NULL;
        free(dense);
        srv_metrics_embedded(&s->metrics, n, r->prompt_tokens);
        /* What the answer's shape cannot say (TEI's and llama-server's are bare arrays). */
        char tokens[24], truncated[24], over[24];
        snprintf(tokens, sizeof tokens, "%lld", (long long)r->prompt_tokens);
        snprintf(truncated, sizeof truncated, "%lld", (long long)r->n_truncated);
        snprintf(over, sizeof over, "%lld", (long long)r->n_over_training);
        const header h[] = {
            {"X-Compute-Tokens", tokens},
            {r->n_truncated ? "X-Truncated-Inputs" : NULL, truncated},
            {r->n_over_training ? "X-Over-Training-Length" : NULL, over},
        };
        ret = respond(s, c, r, 200, body, len, "application/json", h, 3);
    } else {
        srv_api_error err;
        const int status = st == SPECTRAL_ERR_MEMORY_LIMIT ? 413 : st == SPECTRAL_ERR_INVALID_ARGUMENT ? 400 : 500;
        if (status == 413) srv_metrics_rejected(&s->metrics, SRV_REJECT_TOO_LARGE);
        fail(&err, status, status == 413 ? "input_too_large" : status == 400 ? "invalid_input" : "server_error",
             "input[%lld]: %s", (long long)input, msg);
        ret = respond_error(s, c, r, &err, NULL);
    }
    srv_job_free(job);
    return ret;
}

/* ---- tokens ------------------------------------------------------------ */

/* Pieces of ids into seq (pieces, offsets and flags malloc'd and counted
 * for r); -1 with err set. */
static int make_pieces(server *s, request *r, const int32_t *ids, int64_t n, srv_token_seq *seq, srv_api_error *err) {
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) total += spectral_token_to_piece(s->model, ids[i], NULL, 0);
    if (take_memory(s, r, (size_t)n * (sizeof(int64_t) + sizeof(bool)) + (size_t)total + 16, err)) return -1;
    int64_t *off = malloc((size_t)(n + 1) * sizeof *off);
    bool *special = malloc((size_t)(n ? n : 1) * sizeof *special);
    char *pieces = malloc((size_t)total + 1);
    if (!off || !special || !pieces) {
        free(off);
        free(special);
        free(pieces);
        return fail(err, 500, "out_of_memory", "out of memory");
    }
    total = 0;
    for (int64_t i = 0; i < n; i++) {
        off[i] = total;
        total += spectral_token_to_piece(s->model, ids[i], NULL, 0);
    }
    for (int64_t i = 0; i < n; i++) {
        spectral_token_to_piece(s->model, ids[i], pieces + off[i], total - off[i]);
        special[i] = spectral_token_is_control(s->model, ids[i]);
    }
    off[n] = total;
    *seq = (srv_token_seq){ids, n, pieces, off, special};
    return 0;
}

static void free_pieces(srv_token_seq *seq) {
    free((void *)seq->pieces);
    free((void *)seq->piece_off);
    free((void *)seq->special);
}

static enum MHD_Result tokenize_received(server *s, struct MHD_Connection *c, request *r) {
    srv_api_error err;
    const srv_api_limits lim = {.n_vocab = s->n_vocab, .max_inputs = s->o.max_inputs};
    srv_tokenize_request req;
    const int parsed = srv_api_parse_tokenize(r->body ? r->body : "", r->len, &lim, &r->charge, &req, &err);
    srv_charged_free(r->body);
    r->body = NULL;
    if (parsed) return respond_error(s, c, r, &err, NULL);
    r->proto = req.proto;
    srv_token_seq *seqs = calloc((size_t)req.n_texts, sizeof *seqs);
    int rc = seqs ? 0 : fail(&err, 500, "out_of_memory", "out of memory");
    spectral_tokenize_params tp = spectral_tokenize_default_params();
    tp.add_special = req.add_special;
    for (int64_t i = 0; i < req.n_texts && !rc; i++) {
        const srv_embed_input *t = &req.texts[i];
        const int64_t n = spectral_tokenize_with(s->model, t->text, t->len, tp, NULL, 0);
        int32_t *ids = NULL;
        if (n < 0) rc = fail(&err, 400, "invalid_input", "inputs[%lld] cannot be tokenized: %s", (long long)i, spectral_last_error());
        if (!rc) rc = take_memory(s, r, (size_t)n * sizeof *ids, &err);
        if (!rc && !(ids = malloc((size_t)(n ? n : 1) * sizeof *ids))) rc = fail(&err, 500, "out_of_memory", "out of memory");
        if (!rc && spectral_tokenize_with(s->model, t->text, t->len, tp, ids, n) != n)
            rc = fail(&err, 500, "server_error", "inputs[%lld]: tokenizing twice gave different counts", (long long)i);
        if (!rc) rc = make_pieces(s, r, ids, n, &seqs[i], &err);
        if (rc) free(ids);
    }
    if (!rc) rc = take_memory(s, r, srv_api_tokens_bound(seqs, req.n_texts), &err);
    size_t len = 0;
    char *body = rc ? NULL : srv_api_tokens_json(&req, seqs, &len);
    for (int64_t i = 0; seqs && i < req.n_texts; i++) {
        free((void *)seqs[i].ids);
        free_pieces(&seqs[i]);
    }
    free(seqs);
    srv_tokenize_request_free(&req);
    return rc ? respond_error(s, c, r, &err, NULL) : respond_json(s, c, r, 200, body, len);
}

static enum MHD_Result detokenize_received(server *s, struct MHD_Connection *c, request *r) {
    srv_api_error err;
    const srv_api_limits lim = {.n_vocab = s->n_vocab, .max_inputs = s->o.max_inputs};
    int32_t *ids = NULL;
    int64_t n = 0;
    const int parsed = srv_api_parse_detokenize(r->body ? r->body : "", r->len, &lim, &r->charge, &ids, &n, &err);
    srv_charged_free(r->body);
    r->body = NULL;
    if (parsed) return respond_error(s, c, r, &err, NULL);
    srv_token_seq seq = {0};
    int rc = make_pieces(s, r, ids, n, &seq, &err);
    if (!rc) rc = take_memory(s, r, (size_t)seq.piece_off[n] * 6 + 32, &err);
    size_t len = 0;
    char *body = rc ? NULL : srv_api_detokenize_json(seq.pieces, (size_t)seq.piece_off[n], &len);
    if (seq.piece_off) free_pieces(&seq);
    srv_charged_free(ids);
    return rc ? respond_error(s, c, r, &err, NULL) : respond_json(s, c, r, 200, body, len);
}

/* ---- routing ----------------------------------------------------------- */

typedef struct {
    const char *path;
    srv_endpoint ep;
    const char *methods; /* for Allow */
    body_use post;       /* what a POST does; DO_NOTHING: GET only */
    srv_proto proto;
} route;

static const route k_routes[] = {
    {"/v1/embeddings", SRV_EP_EMBEDDINGS, "POST, OPTIONS", DO_EMBED, SRV_PROTO_OPENAI},
    {"/embeddings", SRV_EP_EMBEDDINGS, "POST, OPTIONS", DO_EMBED, SRV_PROTO_OPENAI},
    {"/embed", SRV_EP_EMBEDDINGS, "POST, OPTIONS", DO_EMBED, SRV_PROTO_TEI},
    {"/", SRV_EP_EMBEDDINGS, "GET, HEAD, POST, OPTIONS", DO_EMBED, SRV_PROTO_TEI}, /* GET: /health */
    {"/embedding", SRV_EP_EMBEDDINGS, "POST, OPTIONS", DO_EMBED, SRV_PROTO_LLAMA},
    {"/tokenize", SRV_EP_TOKENIZE, "POST, OPTIONS", DO_TOKENIZE, SRV_PROTO_TEI},
    {"/detokenize", SRV_EP_TOKENIZE, "POST, OPTIONS", DO_DETOKENIZE, SRV_PROTO_LLAMA},
    {"/v1/models", SRV_EP_MODELS, "GET, HEAD, OPTIONS", DO_NOTHING, SRV_PROTO_OPENAI},
    {"/models", SRV_EP_MODELS, "GET, HEAD, OPTIONS", DO_NOTHING, SRV_PROTO_OPENAI},
    {"/info", SRV_EP_MODELS, "GET, HEAD, OPTIONS", DO_NOTHING, SRV_PROTO_TEI},
    {"/props", SRV_EP_MODELS, "GET, HEAD, OPTIONS", DO_NOTHING, SRV_PROTO_LLAMA},
    {"/health", SRV_EP_HEALTH, "GET, HEAD, OPTIONS", DO_NOTHING, SRV_PROTO_OPENAI},
    {"/metrics", SRV_EP_METRICS, "GET, HEAD, OPTIONS", DO_NOTHING, SRV_PROTO_OPENAI},
};

/* The route of url; /v1/models/{id} and /models/{id} set *model_id. */
static const route *find_route(const char *url, const char **model_id) {
    static const route model_route = {"/v1/models/{id}", SRV_EP_MODELS, "GET, HEAD, OPTIONS", DO_NOTHING,
                                      SRV_PROTO_OPENAI};
    *model_id = NULL;
    for (size_t i = 0; i < sizeof k_routes / sizeof k_routes[0]; i++)
        if (!strcmp(url, k_routes[i].path)) return &k_routes[i];
    for (const char *p = "/v1/models/"; p; p = strcmp(p, "/models/") ? "/models/" : NULL)
        if (!strncmp(url, p, strlen(p)) && url[strlen(p)]) {
            *model_id = url + strlen(p);
            return &model_route;
        }
    return NULL;
}

/* Whether origin is one of --cors's comma-separated origins (or it is "*"). */
static const char *cors_origin(const server *s, const char *origin) {
    const char *list = s->o.cors;
    if (!list) return NULL;
    if (!strcmp(list, "*")) return "*";
    if (!origin) return NULL;
    const size_t n = strlen(origin);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        const size_t k = end ? (size_t)(end - p) : strlen(p);
        if (k == n && !strncmp(p, origin, n)) return origin;
        p += k + (end != NULL);
    }
    return NULL;
}

typedef struct {
    int lengths;
    const char *first;
    bool differ, chunked;
} framing;

static enum MHD_Result look_at_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    framing *f = cls;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        if (f->lengths++ && strcmp(f->first, value)) f->differ = true;
        if (f->lengths == 1) f->first = value;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->chunked = true;
    }
    return MHD_YES;
}

/* GET routes: answered from the headers. */
static enum MHD_Result answer_get(server *s, struct MHD_Connection *c, request *r, const route *rt,
                                  const char *model_id) {
    size_t len = 0;
    if (rt->ep == SRV_EP_METRICS) {
        srv_metrics_gauges g = {
            .queue_limit = s->o.queue,
            .in_flight = (int64_t)atomic_load(&s->in_flight),
            .contexts = s->o.parallel,
            .mem_limit = s->o.mem_limit,
            .request_mem = srv_budget_used(&s->budget),
            .request_mem_limit = s->budget.limit,
            .connections_cut = srv_watch_cut_count(s->watch),
        };
        srv_pool_get_stats(s->pool, &g.pool);
        char *body = srv_metrics_text(&s->metrics, &g, &len);
        return respond(s, c, r, 200, body, len, "text/plain; version=0.0.4", NULL, 0);
    }
    if (model_id && strcmp(model_id, s->model_id)) {
        srv_api_error err;
        srv_api_set_error(&err, 404, "invalid_request_error", "model", "model_not_found",
                          "The model '%.200s' does not exist: this server serves '%s'", model_id, s->model_id);
        return respond_error(s, c, r, &err, NULL);
    }
    char *body = !strcmp(rt->path, "/info")    ? srv_api_info_json(&s->card, &len)
                 : !strcmp(rt->path, "/props") ? srv_api_props_json(&s->card, &len)
                                               : srv_api_models_json(&s->card, model_id != NULL, &len);
    return respond_json(s, c, r, 200, body, len);
}

/* /health (and TEI's GET /): the server is up and the model loaded, answered
 * at once however busy the contexts are; 503 once it is draining. */
static enum MHD_Result answer_health(server *s, struct MHD_Connection *c, request *r) {
    const bool d = atomic_load(&s->draining);
    char *body = strdup(d ? "{\"status\":\"draining\"}\n" : "{\"status\":\"ok\"}\n");
    return respond_json(s, c, r, d ? 503 : 200, body, body ? strlen(body) : 0);
}

/* The first call for a request (its headers are in, its body is not): what
 * can be answered from the headers alone is answered now, so that a
 * refused upload is never read. */
static enum MHD_Result request_started(server *s, struct MHD_Connection *c, const char *url, const char *method,
                                       request *r) {
    srv_api_error err;
    const char *model_id;
    const route *rt = find_route(url, &model_id);
    const bool get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
    const bool post = !strcmp(method, MHD_HTTP_METHOD_POST);
    r->cors_origin = cors_origin(s, MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin"));
    r->ep = rt ? rt->ep : SRV_EP_OTHER;
    r->proto = rt ? rt->proto : SRV_PROTO_OPENAI;
    if (!rt) {
        srv_api_set_error(&err, 404, "invalid_request_error", NULL, "not_found",
                          "no such endpoint (POST /v1/embeddings, /embed, /embedding, /tokenize, /detokenize; "
                          "GET /v1/models, /info, /props, /health, /metrics)");
        return respond_error(s, c, r, &err, NULL);
    }
    if (!strcmp(method, MHD_HTTP_METHOD_OPTIONS)) {
        /* A CORS preflight (never needs the key: browsers send none with it). */
        const header h[] = {
            {MHD_HTTP_HEADER_ALLOW, rt->methods},
            {r->cors_origin ? "Access-Control-Allow-Methods" : NULL, rt->methods},
            {r->cors_origin ? "Access-Control-Allow-Headers" : NULL, "Authorization, Content-Type"},
            {r->cors_origin ? "Access-Control-Max-Age" : NULL, "600"},
        };
        char *body = strdup("");
        return respond(s, c, r, 204, body, 0, "text/plain", h, 4);
    }
    if (get && (rt->ep == SRV_EP_HEALTH || !strcmp(rt->path, "/"))) {
        r->ep = SRV_EP_HEALTH;
        return answer_health(s, c, r);
    }
    if (s->api_key && !srv_api_bearer_ok(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
                                         s->api_key)) {
        srv_api_set_error(&err, 401, "invalid_request_error", NULL, "invalid_api_key",
                          "missing or wrong API key (send 'Authorization: Bearer KEY')");
        return respond_error(s, c, r, &err, NULL);
    }
    if (rt->post == DO_NOTHING ? !get : !post) {
        srv_api_set_error(&err, 405, "invalid_request_error", NULL, "method_not_allowed", "%s takes %s", rt->path,
                          rt->methods);
        return respond_error(s, c, r, &err, rt->methods);
    }
    if (rt->post == DO_NOTHING) return answer_get(s, c, r, rt, model_id);
    r->use = rt->post;
    if (atomic_load(&s->draining)) {
        srv_api_set_error(&err, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
        return respond_error(s, c, r, &err, NULL);
    }
    framing f = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, look_at_header, &f);
    if (f.differ || (f.lengths && f.chunked)) {
        srv_api_set_error(&err, 400, "invalid_request_error", NULL, "conflicting_length",
                          "the request's length is ambiguous (%s)",
                          f.differ ? "Content-Length headers that disagree" : "both Content-Length and Transfer-Encoding");
        return respond_error(s, c, r, &err, NULL);
    }
    if (r->use == DO_EMBED && srv_pool_full(s->pool)) {
        srv_metrics_rejected(&s->metrics, SRV_REJECT_QUEUE_FULL);
        srv_api_set_error(&err, 503, "server_error", NULL, "queue_full",
                          "the server's queue is full (%d requests); retry later", s->o.queue);
        return respond_error(s, c, r, &err, NULL);
    }
    const char *cl = f.lengths ? f.first : NULL;
    if (cl) {
        char *end;
        errno = 0;
        const unsigned long long n = strtoull(cl, &end, 10);
        if (errno || end == cl || n > s->o.max_body) {
            srv_metrics_rejected(&s->metrics, SRV_REJECT_TOO_LARGE);
            srv_api_set_error(&err, 413, "invalid_request_error", NULL, "request_too_large",
                              "the request body is larger than this server's limit of %zu bytes (--max-body)",
                              s->o.max_body);
            return respond_error(s, c, r, &err, NULL);
        }
        if (n > 0) {
            /* The body is counted from its headers, before a byte of it is read. */
            r->body = srv_charged_alloc(&r->charge, (size_t)n + 1);
            if (!r->body) {
                alloc_failure(s, r, &err);
                return respond_error(s, c, r, &err, NULL);
            }
            r->cap = (size_t)n + 1;
        }
    }
    r->stage = ST_BODY;
    return MHD_YES;
}

/* Stops keeping the body: the rest is read and dropped, then e answers. */
static void refuse_body(request *r, const srv_api_error *e) {
    r->refused = true;
    r->refusal = *e;
    srv_charged_free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
}

/* A piece of the body. Past --max-body (a chunked upload, whose size is
 * not known in advance) or --request-mem the rest is read and dropped so
 * that the client still gets its answer; one that goes on past four times
 * the limit is cut. */
static enum MHD_Result body_piece(server *s, request *r, const char *data, size_t n) {
    srv_api_error err;
    if (!r->refused && r->len + n > s->o.max_body) {
        srv_metrics_rejected(&s->metrics, SRV_REJECT_TOO_LARGE);
        srv_api_set_error(&err, 413, "invalid_request_error", NULL, "request_too_large",
                          "the request body is larger than this server's limit of %zu bytes (--max-body)",
                          s->o.max_body);
        refuse_body(r, &err);
    }
    if (!r->refused && r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1) cap *= 2;
        if (cap > s->o.max_body + 1) cap = s->o.max_body + 1;
        char *b = srv_charged_alloc(&r->charge, cap);
        if (!b && !atomic_load(&r->charge.refused)) return MHD_NO; /* out of memory: the connection is closed */
        if (!b) {
            memory_refusal(s, r, &err);
            refuse_body(r, &err);
        } else {
            if (r->len) memcpy(b, r->body, r->len);
            srv_charged_free(r->body);
            r->body = b;
            r->cap = cap;
        }
    }
    if (r->refused) {
        r->discarded += n;
        return r->discarded > 4 * s->o.max_body ? MHD_NO : MHD_YES;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return MHD_YES;
}

static enum MHD_Result body_received(server *s, struct MHD_Connection *c, request *r) {
    if (r->refused) return respond_error(s, c, r, &r->refusal, NULL);
    if (atomic_load(&s->draining) && !r->before_drain) {
        srv_api_error err;
        srv_api_set_error(&err, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
        return respond_error(s, c, r, &err, NULL);
    }
    if (r->use == DO_TOKENIZE) return tokenize_received(s, c, r);
    if (r->use == DO_DETOKENIZE) return detokenize_received(s, c, r);
    return embed_received(s, c, r);
}

enum MHD_Result srv_on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload_data, size_t *upload_size,
                               void **con_cls) {
    (void)version;
    server *s = cls;
    request *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        *con_cls = r;
        r->t0 = now_s();
        r->before_drain = !atomic_load(&s->draining);
        r->watched = watched_conn(c);
        srv_charge_init(&r->charge, &s->budget);
        atomic_fetch_add(&s->in_flight, 1);
        return request_started(s, c, url, method, r);
    }
    switch (r->stage) {
    case ST_BODY:
        if (*upload_size) {
            const enum MHD_Result ok = body_piece(s, r, upload_data, *upload_size);
            *upload_size = 0;
            return ok;
        }
        return body_received(s, c, r);
    case ST_WAIT:
        return embed_answer(s, c, r);
    case ST_DONE:
    default:
        /* Answered already (more body after an early answer is discarded). */
        *upload_size = 0;
        return MHD_YES;
    }
}

void srv_on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why) {
    (void)why;
    server *s = cls;
    request *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    /* A suspended request is never completed (libmicrohttpd neither times
     * it out nor notices the client leaving, and the daemon is stopped only
     * when every job has ended), so the job is no longer the pool's. */
    srv_job_free(r->job);
    srv_charged_free(r->body);
    srv_charged_free(r->notes);
    srv_charge_release(&r->charge);
    free(r);
    srv_watch_set(s->watch, watched_conn(c), SRV_CONN_RECEIVING);
    atomic_fetch_sub(&s->in_flight, 1);
}

void srv_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                       enum MHD_ConnectionNotificationCode code) {
    server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context = ci ? srv_watch_open(s->watch, ci->connect_fd) : NULL;
    } else {
        srv_watch_close(s->watch, *socket_context);
        *socket_context = NULL;
    }
}
