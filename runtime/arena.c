#include "runtime/arena.h"

#include <stdint.h>

void sp_arena_init(sp_arena *a, void *base, size_t size) {
    a->base = base;
    a->size = size;
    a->used = 0;
    a->measure = 0;
    a->failed = 0;
    a->tables = NULL;
}

void sp_arena_init_measure(sp_arena *a) {
    sp_arena_init(a, NULL, SIZE_MAX);
    a->measure = 1;
}

void sp_arena_reset(sp_arena *a) {
    a->used = 0;
    a->failed = 0;
}

int sp_arena_measuring(const sp_arena *a) { return a->measure; }

void *sp_arena_alloc(sp_arena *a, size_t bytes) {
    /* Round every block up so the next one stays aligned; a zero-byte request
     * still gets a distinct address. */
    size_t rounded = bytes ? bytes : 1;
    if (rounded > SIZE_MAX - (SP_ARENA_ALIGN - 1)) {
        a->failed = 1;
        return NULL;
    }
    rounded = (rounded + SP_ARENA_ALIGN - 1) & ~(size_t)(SP_ARENA_ALIGN - 1);
    if (rounded > a->size - a->used) {
        a->failed = 1;
        return NULL;
    }
    size_t offset = a->used;
    a->used += rounded;
    if (a->measure) return (void *)(uintptr_t)(SP_ARENA_ALIGN + offset); /* placeholder, never dereferenced */
    return a->base + offset;
}
