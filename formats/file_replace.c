/* A file written beside its destination and renamed over it: see file_replace.h. */
#define _POSIX_C_SOURCE 200809L /* lstat, realpath, fsync, fdopen */
#define _XOPEN_SOURCE 700       /* realpath */
#include "formats/file_replace.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/gguf.h" /* sp_set_err */

static void clear(sp_file_replace *r) {
    free(r->dest);
    free(r->tmp);
    memset(r, 0, sizeof *r);
}

/* The file that the destination path stands for, or NULL (message in err)
 * when it must not be replaced. */
static char *destination(const char *path, char *err, size_t err_len) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno != ENOENT) {
            sp_set_err(err, err_len, "cannot check '%s': %s", path, strerror(errno));
            return NULL;
        }
        char *d = strdup(path);
        if (!d) sp_set_err(err, err_len, "out of memory");
        return d;
    }
    if (S_ISLNK(st.st_mode)) {
        /* Write the link's target, as fopen would, and keep the link. */
        char *d = realpath(path, NULL);
        if (!d || stat(d, &st) != 0) {
            sp_set_err(err, err_len, "'%s' is a symbolic link to nothing that can be written", path);
            free(d);
            return NULL;
        }
        if (!S_ISREG(st.st_mode)) {
            sp_set_err(err, err_len, "'%s' links to %s, which is not a regular file: refusing to replace it",
                       path, d);
            free(d);
            return NULL;
        }
        return d;
    }
    if (!S_ISREG(st.st_mode)) {
        sp_set_err(err, err_len, "'%s' is not a regular file (%s): refusing to replace it", path,
                   S_ISDIR(st.st_mode)                          ? "a directory"
                   : S_ISFIFO(st.st_mode)                       ? "a FIFO"
                   : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                                                                : "a socket or other special file");
        return NULL;
    }
    char *d = strdup(path);
    if (!d) sp_set_err(err, err_len, "out of memory");
    return d;
}

int sp_file_replace_begin(sp_file_replace *r, const char *path, char *err, size_t err_len) {
    static atomic_uint counter;
    memset(r, 0, sizeof *r);
    if (!path || !path[0]) {
        sp_set_err(err, err_len, "empty output path");
        return -1;
    }
    if (!(r->dest = destination(path, err, err_len))) return -1;
    const size_t n = strlen(r->dest) + 64;
    if (!(r->tmp = malloc(n))) {
        sp_set_err(err, err_len, "out of memory");
        clear(r);
        return -1;
    }
    /* O_EXCL: a name of our own, never a file that was there; mode 0666 so
     * that the umask applies as it would to the file written directly. */
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        snprintf(r->tmp, n, "%s.%ld-%u.tmp", r->dest, (long)getpid(), atomic_fetch_add(&counter, 1));
        fd = open(r->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        sp_set_err(err, err_len, "cannot create a file beside '%s': %s", r->dest, strerror(errno));
        clear(r);
        return -1;
    }
    if (!(r->f = fdopen(fd, "wb"))) {
        sp_set_err(err, err_len, "cannot open '%s': %s", r->tmp, strerror(errno));
        close(fd);
        unlink(r->tmp);
        clear(r);
        return -1;
    }
    return 0;
}

int sp_file_replace_close(sp_file_replace *r, char *err, size_t err_len) {
    if (!r->f) return 0;
    int e = 0;
    errno = 0;
    if (fflush(r->f) != 0 || ferror(r->f)) e = errno ? errno : EIO;
    /* on disk before the rename makes it the destination */
    if (!e && fsync(fileno(r->f)) != 0) e = errno;
    if (fclose(r->f) != 0 && !e) e = errno;
    r->f = NULL;
    if (e) sp_set_err(err, err_len, "error writing '%s': %s", r->dest, strerror(e));
    return e ? -1 : 0;
}

int sp_file_replace_commit(sp_file_replace *r, char *err, size_t err_len) {
    if (sp_file_replace_close(r, err, err_len)) return -1;
    if (rename(r->tmp, r->dest) != 0) {
        sp_set_err(err, err_len, "cannot rename '%s' to '%s': %s", r->tmp, r->dest, strerror(errno));
        return -1;
    }
    clear(r);
    return 0;
}

void sp_file_replace_abort(sp_file_replace *r) {
    if (!r->tmp) return;
    if (r->f) fclose(r->f);
    unlink(r->tmp);
    clear(r);
}
