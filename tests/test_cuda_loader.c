/* The loader of the CUDA backend module (kernels/cuda/backend_cuda_loader.c).
 * Needs no GPU: one scenario per process, since the module is loaded once.
 *
 *   test_cuda_loader missing PATH    SPECTRAL_CUDA_MODULE names no file
 *   test_cuda_loader notelf PATH     ... a file that is not a shared object
 *   test_cuda_loader foreign PATH    ... a shared object that is not a module
 *   test_cuda_loader stale PATH      ... a module built for another backend.h
 *   test_cuda_loader real PATH       ... the module, or the directory holding it
 *   test_cuda_loader search          no SPECTRAL_CUDA_MODULE: found from the
 *                                    executable's directory, by 8 threads at once
 *
 * A refused module gives device_count() == 0 and create() == NULL with the
 * reason; the real one loads, and then create() either works (a GPU) or fails
 * with the CUDA runtime's own message (no GPU or no driver). */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "kernels/backend.h"
#include "kernels/cuda/cuda_module.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"

/* The module must be refused, the message containing want. */
static void expect_refused(const char *want) {
    char err[512] = "", perr[512] = "";
    CHECK(sp_cuda_module_path(perr, sizeof perr) == NULL, "module loaded");
    CHECK(sp_backend_cuda_device_count() == 0, "device count of a refused module");
    sp_backend *be = sp_backend_cuda_create(0, err, sizeof err);
    CHECK(be == NULL, "created a backend from a refused module");
    CHECK(strstr(err, want) != NULL, "message '%s' lacks '%s'", err, want);
    CHECK(strcmp(err, perr) == 0, "create said '%s', the loader '%s'", err, perr);
    printf("refused: %s\n", err);
}

/* The module must load; create works or fails with the CUDA runtime's reason. */
static void expect_loaded(const char *suffix) {
    char err[512] = "";
    const char *path = sp_cuda_module_path(err, sizeof err);
    CHECK(path != NULL, "module not loaded: %s", err);
    if (!path) return;
    size_t n = strlen(path), m = strlen(suffix);
    CHECK(n >= m && !strcmp(path + n - m, suffix), "loaded '%s', not '...%s'", path, suffix);
    int count = sp_backend_cuda_device_count();
    CHECK(count >= 0, "device count %d", count);
    err[0] = '\0';
    sp_backend *be = sp_backend_cuda_create(0, err, sizeof err);
    if (count > 0) {
        CHECK(be != NULL && !strcmp(be->ops->name, "cuda"), "create(0) with %d devices: %s",
              count, err);
        if (be) be->ops->destroy(be);
    } else {
        CHECK(be == NULL && err[0] && !strstr(err, "module"),
              "without a device create(0) should fail with CUDA's reason: '%s'", err);
    }
    printf("loaded %s: %d device(s)%s%s\n", path, count, count ? "" : ", create: ", count ? "" : err);
}

static void *count_devices(void *arg) {
    *(int *)arg = sp_backend_cuda_device_count();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_cuda_loader SCENARIO [PATH]\n");
        return 2;
    }
    const char *scenario = argv[1], *path = argc > 2 ? argv[2] : NULL;
    if (path)
        setenv("SPECTRAL_CUDA_MODULE", path, 1);
    else
        unsetenv("SPECTRAL_CUDA_MODULE");
    if (!strcmp(scenario, "missing")) {
        expect_refused("not found");
    } else if (!strcmp(scenario, "notelf")) {
        expect_refused("cannot load");
    } else if (!strcmp(scenario, "foreign")) {
        expect_refused("is not a spectral CUDA module");
    } else if (!strcmp(scenario, "stale")) {
        expect_refused("stale");
    } else if (!strcmp(scenario, "real")) {
        expect_loaded(SP_CUDA_MODULE_FILE);
    } else if (!strcmp(scenario, "search")) {
        /* the first use, from many threads at once: loaded once, same answer */
        pthread_t th[8];
        int counts[8];
        for (int i = 0; i < 8; i++) pthread_create(&th[i], NULL, count_devices, &counts[i]);
        for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
        for (int i = 1; i < 8; i++)
            CHECK(counts[i] == counts[0], "thread %d saw %d devices, thread 0 %d", i, counts[i],
                  counts[0]);
        expect_loaded("/lib/spectral/" SP_CUDA_MODULE_FILE);
    } else {
        fprintf(stderr, "unknown scenario '%s'\n", scenario);
        return 2;
    }
    printf("scenario %s\n", scenario);
    return check_report("test_cuda_loader");
}
