/* The activation arena: one block of backend memory, carved by a bump
 * pointer, reset before each document. A measuring arena allocates nothing
 * and only records how much a run would take, so the plan and the run share
 * one code path (the graph code allocates the same way in both). */
#ifndef SP_ARENA_H
#define SP_ARENA_H

#include <stddef.h>

#include "kernels/backend.h"

#define SP_ARENA_ALIGN 256

struct sp_arena {
    char *base;   /* NULL when measuring */
    size_t size;  /* capacity in bytes */
    size_t used;  /* bytes handed out since the last reset, padding included */
    int measure;
    int failed;   /* set when an allocation did not fit */
    struct sp_tables *tables; /* the context's derived-table cache for this pass, or NULL */
};

void sp_arena_init(sp_arena *a, void *base, size_t size);
void sp_arena_init_measure(sp_arena *a);
void sp_arena_reset(sp_arena *a);

#endif
