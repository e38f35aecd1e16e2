/* server_budget.c - request memory (see server_budget.h). */
#include "server_budget.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void srv_budget_init(srv_budget *b, size_t limit) {
    atomic_init(&b->used, 0);
    b->limit = limit;
}

size_t srv_budget_used(srv_budget *b) { return atomic_load(&b->used); }

void srv_charge_init(srv_charge *c, srv_budget *b) {
    c->budget = b;
    atomic_init(&c->held, 0);
    atomic_init(&c->refused, false);
    atomic_init(&c->never_fits, false);
}

bool srv_charge_take(srv_charge *c, size_t n) {
    if (!c || !c->budget) return true;
    srv_budget *b = c->budget;
    size_t used = atomic_load(&b->used);
    do {
        if (n > b->limit || used > b->limit - n) {
            atomic_store(&c->refused, true);
            if (n > b->limit || atomic_load(&c->held) > b->limit - n) atomic_store(&c->never_fits, true);
            return false;
        }
    } while (!atomic_compare_exchange_weak(&b->used, &used, used + n));
    atomic_fetch_add(&c->held, n);
    return true;
}

void srv_charge_give(srv_charge *c, size_t n) {
    if (!c || !c->budget || !n) return;
    atomic_fetch_sub(&c->held, n);
    atomic_fetch_sub(&c->budget->used, n);
}

void srv_charge_release(srv_charge *c) {
    if (!c || !c->budget) return;
    atomic_fetch_sub(&c->budget->used, atomic_exchange(&c->held, 0));
}

/* Each block carries its charge and size in front; what it costs is its
 * size plus that header plus glibc's per-chunk overhead (16 bytes). */
typedef struct {
    srv_charge *charge;
    size_t cost;
} block_head;

enum { HEAD = 16, MALLOC_OVERHEAD = 16 };
_Static_assert(sizeof(block_head) <= HEAD, "block header fits its 16 bytes");

static size_t block_cost(size_t n) { return n + HEAD + MALLOC_OVERHEAD; }

void *srv_charged_alloc(srv_charge *c, size_t n) {
    if (n > SIZE_MAX - HEAD - MALLOC_OVERHEAD) return NULL;
    const size_t cost = block_cost(n);
    if (!srv_charge_take(c, cost)) return NULL;
    unsigned char *p = malloc(n + HEAD);
    if (!p) {
        srv_charge_give(c, c && c->budget ? cost : 0);
        return NULL;
    }
    block_head h = {c && c->budget ? c : NULL, cost};
    memcpy(p, &h, sizeof h);
    return p + HEAD;
}

void srv_charged_free(void *p) {
    if (!p) return;
    unsigned char *base = (unsigned char *)p - HEAD;
    block_head h;
    memcpy(&h, base, sizeof h);
    free(base);
    if (h.charge) srv_charge_give(h.charge, h.cost);
}
