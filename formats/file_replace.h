/* Writing a file so that it is either complete or not there: the data goes
 * into a new temporary file beside the destination, which is renamed over
 * it only once it is whole (and, for the caller who wants it, checked).
 *
 *     sp_file_replace r;
 *     if (sp_file_replace_begin(&r, path, err, sizeof err)) return -1;  // refused or cannot create
 *     ... fwrite(..., r.f) ...
 *     if (sp_file_replace_close(&r, err, sizeof err) || !looks_right(r.tmp) ||
 *         sp_file_replace_commit(&r, err, sizeof err)) {
 *         sp_file_replace_abort(&r);   // removes the temporary file, nothing else
 *         return -1;
 *     }
 *
 * The destination may be missing, a regular file (replaced on commit), or a
 * symbolic link to one (its target is replaced; the link stays). Anything
 * else (a device, a FIFO, a directory, a dangling link) is refused by begin,
 * before anything is created: the only file this module ever removes is the
 * temporary one it made. Internal to spectral (sp_ names). */
#ifndef SP_FILE_REPLACE_H
#define SP_FILE_REPLACE_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char *dest; /* the file that commit replaces: the path, symbolic links resolved */
    char *tmp;  /* the temporary file beside it, created by begin */
    FILE *f;    /* open on tmp until close */
} sp_file_replace;

/* Checks the destination and creates the temporary file (mode 0666 less the
 * umask, as fopen would). 0, or -1 with a message (and nothing to undo). */
int sp_file_replace_begin(sp_file_replace *r, const char *path, char *err, size_t err_len);
/* Flushes, syncs and closes the temporary file: 0, or -1 with the first
 * write error's message. */
int sp_file_replace_close(sp_file_replace *r, char *err, size_t err_len);
/* Closes the temporary file if still open, renames it over the destination
 * and frees r. 0, or -1 with a message (r is then still to abort). */
int sp_file_replace_commit(sp_file_replace *r, char *err, size_t err_len);
/* Closes and removes the temporary file and frees r; a no-op after commit. */
void sp_file_replace_abort(sp_file_replace *r);

#ifdef __cplusplus
}
#endif
#endif
