/* server_budget.h - spectral-server's request memory: everything requests
 * hold outside the contexts' arenas (bodies being received, their parse,
 * tokens, vectors, answers being sent) counted against one budget,
 * --request-mem, so that a crowd of large or slow uploads cannot grow the
 * process past its documented bound.
 *
 * Usage:
 *
 *     static srv_budget b;
 *     srv_budget_init(&b, 1u << 30);
 *     srv_charge c;                                  // one per request
 *     srv_charge_init(&c, &b);
 *     if (!srv_charge_take(&c, body_len)) refuse(c.never_fits ? 413 : 503);
 *     char *p = srv_charged_alloc(&c, n);            // counted malloc, NULL past the budget
 *     srv_charged_free(p);                           // gives its bytes back
 *     srv_charge_release(&c);                        // what the request still holds
 *
 * Thread safety: every function may be called from any thread at once; a
 * charge's counters are atomic. A charge must outlive the blocks allocated
 * against it. */
#ifndef SPECTRAL_SERVER_BUDGET_H
#define SPECTRAL_SERVER_BUDGET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    atomic_size_t used;
    size_t limit;
} srv_budget;

typedef struct {
    srv_budget *budget; /* NULL: nothing is counted */
    atomic_size_t held;
    atomic_bool refused;    /* a take failed */
    atomic_bool never_fits; /* ... and would fail on an idle server too: this request alone is over the limit */
} srv_charge;

void srv_budget_init(srv_budget *b, size_t limit);
size_t srv_budget_used(srv_budget *b);

void srv_charge_init(srv_charge *c, srv_budget *b);
/* Takes n bytes from the budget for this request: true, or false (and
 * refused set) when the budget cannot give them now. */
bool srv_charge_take(srv_charge *c, size_t n);
void srv_charge_give(srv_charge *c, size_t n);
/* Gives back everything the request still holds (once its counted blocks
 * are freed: a block freed later would give its bytes back twice). */
void srv_charge_release(srv_charge *c);

/* malloc / free counted against c (NULL: not counted), with what the
 * allocator spends per block: a failed take returns NULL, as out of memory
 * does. Blocks must be freed with srv_charged_free. */
void *srv_charged_alloc(srv_charge *c, size_t n);
void srv_charged_free(void *p);

#endif
