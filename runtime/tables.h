/* A context's cache of tables derived from the weights for one document
 * length (M2-BERT's filter spectra), counted against mem_limit with the
 * arena; models reach it through sp_arena_table (models/model.h). */
#ifndef SP_TABLES_H
#define SP_TABLES_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

/* At most this many bytes of tables per context, whatever the limit. */
#define SP_TABLES_MAX ((size_t)1 << 30)

typedef struct sp_tables sp_tables;

sp_tables *sp_tables_new(sp_backend *be); /* NULL: out of memory */
void sp_tables_free(sp_tables *t);
/* Bytes held now. */
size_t sp_tables_resident(const sp_tables *t);
/* Sets the byte budget for the passes to come at length T (< 0: the last
 * pass's) and drops tables until what is held fits it (other lengths first). */
void sp_tables_set_budget(sp_tables *t, int64_t T, size_t budget);
/* Brackets every forward pass with the cache attached to its arena (measure
 * or run): the tables a successful run reserved become valid; those of a
 * failed run are dropped. */
void sp_tables_begin(sp_tables *t, int64_t T, int measuring);
void sp_tables_end(sp_tables *t, int ok);
/* Whether the last run could not allocate a table it had reserved. */
int sp_tables_alloc_failed(const sp_tables *t);

#endif
