/* A context's cache of tables an architecture derives from its weights for
 * one document length (M2-BERT: each layer's filter spectra), kept in
 * backend memory across passes so that a pass at a length seen before skips
 * computing them. Bounded by a byte budget the runtime sets before each
 * pass (what mem_limit leaves once the pass's working memory is counted,
 * at most SP_TABLES_MAX): resident tables always fit in it.
 *
 * The forward pass asks for each table at the start of the pass
 * (sp_arena_table), in measure mode and in the run alike, and the answers
 * agree: a table held for this length is a hit; one that fits in the budget
 * besides the others of this length is reserved (tables of other lengths
 * are dropped, least recently used first, to make room); otherwise the
 * caller computes it into scratch of its own. Tables reserved by a pass are
 * valid only once the pass has succeeded (sp_tables_end). */
#include "runtime/tables.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "models/model.h" /* sp_arena_table */
#include "runtime/arena.h"

typedef struct {
    int64_t T, id;
    size_t bytes;
    void *buf;
    uint64_t used;
    int valid; /* 0 while its pass runs */
} entry;

struct sp_tables {
    sp_backend *be;
    entry *e;
    int64_t n, cap;
    size_t resident; /* bytes of all entries */
    size_t budget;
    uint64_t clock;
    /* the pass being planned or run */
    int64_t T;
    int measuring;
    size_t reserved; /* bytes this pass has reserved (measure mode: would reserve) */
    int alloc_failed;
};

sp_tables *sp_tables_new(sp_backend *be) {
    sp_tables *t = calloc(1, sizeof *t);
    if (t) t->be = be;
    return t;
}

static void drop(sp_tables *t, int64_t i) {
    t->be->ops->buffer_free(t->be, t->e[i].buf);
    t->resident -= t->e[i].bytes;
    t->e[i] = t->e[--t->n];
}

void sp_tables_free(sp_tables *t) {
    if (!t) return;
    while (t->n) drop(t, t->n - 1);
    free(t->e);
    free(t);
}

size_t sp_tables_resident(const sp_tables *t) { return t ? t->resident : 0; }

/* Bytes of valid tables of length T (those an earlier pass filled: the
 * same in the measure pass and in the run, which adds this pass's own). */
static size_t bytes_of(const sp_tables *t, int64_t T) {
    size_t n = 0;
    for (int64_t i = 0; i < t->n; i++)
        if (t->e[i].valid && t->e[i].T == T) n += t->e[i].bytes;
    return n;
}

/* The least recently used entry of another length than T, or -1. */
static int64_t victim(const sp_tables *t, int64_t T) {
    int64_t v = -1;
    for (int64_t i = 0; i < t->n; i++)
        if (t->e[i].T != T && (v < 0 || t->e[i].used < t->e[v].used)) v = i;
    return v;
}

void sp_tables_set_budget(sp_tables *t, int64_t T, size_t budget) {
    if (!t) return;
    if (T < 0) T = t->T;
    t->budget = budget;
    /* Fit the budget: other lengths first, then this length's highest ids
     * (the last layers; a pass reserves in id order, so the first ones stay). */
    while (t->resident > budget) {
        int64_t v = victim(t, T);
        if (v < 0)
            for (int64_t i = 0; i < t->n; i++)
                if (v < 0 || t->e[i].id > t->e[v].id) v = i;
        drop(t, v);
    }
}

void sp_tables_begin(sp_tables *t, int64_t T, int measuring) {
    if (!t) return;
    t->T = T;
    t->measuring = measuring;
    t->reserved = 0;
    t->alloc_failed = 0;
}

void sp_tables_end(sp_tables *t, int ok) {
    if (!t || t->measuring) return;
    for (int64_t i = t->n - 1; i >= 0; i--) {
        if (t->e[i].valid) continue;
        if (ok) t->e[i].valid = 1;
        else drop(t, i); /* never filled: a later pass must not read it */
    }
}

int sp_tables_alloc_failed(const sp_tables *t) { return t && t->alloc_failed; }

void *sp_arena_table(sp_arena *a, int64_t T, int64_t id, size_t bytes, int *fill) {
    sp_tables *t = a->tables;
    *fill = 0;
    if (!t || !bytes || T != t->T) return NULL;
    for (int64_t i = 0; i < t->n; i++)
        if (t->e[i].valid && t->e[i].T == T && t->e[i].id == id && t->e[i].bytes == bytes) {
            if (!t->measuring) t->e[i].used = ++t->clock;
            return t->measuring ? (void *)((uintptr_t)(id + 1) * 256) : t->e[i].buf;
        }
    if (bytes_of(t, T) + t->reserved + bytes > t->budget) return NULL;
    t->reserved += bytes;
    *fill = 1;
    if (t->measuring) return (void *)((uintptr_t)(id + 1) * 256); /* a placeholder, never read */
    while (t->resident + bytes > t->budget) drop(t, victim(t, T)); /* other lengths only */
    if (t->n == t->cap) {
        const int64_t cap = t->cap ? 2 * t->cap : 64;
        entry *ne = realloc(t->e, (size_t)cap * sizeof *ne);
        if (!ne) {
            t->alloc_failed = 1;
            return NULL;
        }
        t->e = ne;
        t->cap = cap;
    }
    void *buf = t->be->ops->buffer_alloc(t->be, bytes);
    if (!buf) {
        t->alloc_failed = 1;
        return NULL;
    }
    t->e[t->n++] = (entry){.T = T, .id = id, .bytes = bytes, .buf = buf, .used = ++t->clock};
    t->resident += bytes;
    return buf;
}
