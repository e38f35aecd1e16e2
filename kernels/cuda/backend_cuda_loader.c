/* The CUDA entry points of kernels/backend.h in a CUDA build: they load the
 * CUDA backend module (libspectral-cuda.so, see cuda_module.h) on first use
 * and forward to it. The module, and with it cudart, cuFFT and cuBLAS, is
 * mapped only when a program asks for CUDA; a CPU-only run never pays for
 * them.
 *
 * Where the module is looked for, first hit wins:
 *   1. $SPECTRAL_CUDA_MODULE: a path to the module, or a directory holding
 *      it. When set, nothing else is tried.
 *   2. Next to the running executable (/proc/self/exe), then in
 *      ../lib/spectral, ../lib64/spectral and ../<libdir>/spectral from it
 *      (a relocated install; also the build tree, whose module sits in
 *      <build>/lib/spectral for the programs in <build>/tools and /tests).
 *   3. The install directory, <prefix>/<libdir>/spectral, fixed at configure
 *      time (SPECTRAL_CUDA_MODULE_INSTALL_DIR).
 *   4. The module in the build tree this library was built in
 *      (SPECTRAL_CUDA_MODULE_BUILD_PATH).
 * A file that exists but does not load (say libcublas is missing) or is a
 * stale module (another spectral version or backend.h layout) is skipped
 * and its reason kept. Nothing found or loadable: device_count() is 0 and
 * create() returns NULL with the reasons; nothing aborts. The module is
 * loaded once per process (pthread_once) and never unloaded. */
#define _XOPEN_SOURCE 700 /* readlink, realpath */
#include "kernels/cuda/cuda_module.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SPECTRAL_CUDA_MODULE_INSTALL_DIR
#define SPECTRAL_CUDA_MODULE_INSTALL_DIR ""
#endif
#ifndef SPECTRAL_CUDA_MODULE_BUILD_PATH
#define SPECTRAL_CUDA_MODULE_BUILD_PATH ""
#endif
#ifndef SPECTRAL_CUDA_MODULE_LIBDIR /* CMAKE_INSTALL_LIBDIR, relative */
#define SPECTRAL_CUDA_MODULE_LIBDIR "lib"
#endif

#define MAX_CANDIDATES 8

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static sp_cuda_module_create_fn g_create;
static sp_cuda_module_device_count_fn g_device_count;
static char g_path[PATH_MAX];
static char g_err[1024]; /* why nothing was loaded */

typedef struct {
    char path[MAX_CANDIDATES][PATH_MAX];
    int n;
} candidates;

/* Appends dir/sub/SP_CUDA_MODULE_FILE (sub may be empty), once. */
static void add_candidate(candidates *c, const char *dir, const char *sub) {
    if (c->n == MAX_CANDIDATES || !dir[0]) return;
    char *p = c->path[c->n];
    int len = snprintf(p, PATH_MAX, "%s/%s%s" SP_CUDA_MODULE_FILE, dir, sub, sub[0] ? "/" : "");
    if (len < 0 || len >= PATH_MAX) return;
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->path[i], p)) return;
    c->n++;
}

static void add_file(candidates *c, const char *file) {
    if (c->n == MAX_CANDIDATES || !file[0] || strlen(file) >= PATH_MAX) return;
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->path[i], file)) return;
    strcpy(c->path[c->n++], file);
}

static void find_candidates(candidates *c) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash && slash != exe) {
            *slash = '\0'; /* the executable's directory */
            add_candidate(c, exe, "");
            add_candidate(c, exe, "../lib/spectral");
            add_candidate(c, exe, "../lib64/spectral");
            add_candidate(c, exe, "../" SPECTRAL_CUDA_MODULE_LIBDIR "/spectral");
        }
    }
    add_candidate(c, SPECTRAL_CUDA_MODULE_INSTALL_DIR, "");
    add_file(c, SPECTRAL_CUDA_MODULE_BUILD_PATH);
}

/* Appends one reason to g_err ("; "-separated, truncated when long). */
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...) {
    size_t used = strlen(g_err);
    if (used + 3 >= sizeof g_err) return;
    if (used) {
        strcpy(g_err + used, "; ");
        used += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err + used, sizeof g_err - used, fmt, ap);
    va_end(ap);
}

/* Loads one candidate; 1 when it is a good module (then g_* are set). */
static int try_load(const char *path) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        note("cuda: cannot load %s: %s", path, e ? e : "unknown dlopen error");
        return 0;
    }
    /* POSIX's way to turn dlsym's void * into a function pointer. */
    sp_cuda_module_get_info_fn get_info;
    sp_cuda_module_create_fn create;
    sp_cuda_module_device_count_fn count;
    void *s = dlsym(h, "sp_cuda_module_get_info");
    memcpy(&get_info, &s, sizeof get_info);
    s = dlsym(h, "sp_cuda_module_create");
    memcpy(&create, &s, sizeof create);
    s = dlsym(h, "sp_cuda_module_device_count");
    memcpy(&count, &s, sizeof count);
    if (!get_info || !create || !count) {
        note("cuda: %s is not a spectral CUDA module (it lacks the sp_cuda_module_* functions)",
             path);
        dlclose(h);
        return 0;
    }
    const sp_cuda_module_info *info = get_info();
    if (!info || info->abi != SP_CUDA_MODULE_ABI || info->ops_size != sizeof(sp_backend_ops) ||
        info->backend_size != sizeof(sp_backend) || !info->version ||
        strcmp(info->version, SP_CUDA_MODULE_VERSION)) {
        note("cuda: %s is a stale CUDA module (spectral %s, module ABI %u, %u-byte op table; "
             "this library is spectral %s, ABI %d, %zu-byte op table): rebuild or reinstall it",
             path, info && info->version ? info->version : "?", info ? info->abi : 0u,
             info ? info->ops_size : 0u, SP_CUDA_MODULE_VERSION, SP_CUDA_MODULE_ABI,
             sizeof(sp_backend_ops));
        dlclose(h);
        return 0;
    }
    g_create = create;
    g_device_count = count;
    char *real = realpath(path, NULL); /* without the exe-relative "/../" */
    snprintf(g_path, sizeof g_path, "%s", real ? real : path);
    free(real);
    return 1; /* never dlclose()d: backends created by it may live until exit */
}

static void load_module(void) {
    static candidates c; /* 32 KiB: not on the stack of whichever thread comes first */
    c.n = 0;
    const char *env = getenv("SPECTRAL_CUDA_MODULE");
    const int from_env = env && env[0];
    struct stat st;
    if (from_env) {
        if (stat(env, &st) == 0 && S_ISDIR(st.st_mode))
            add_candidate(&c, env, "");
        else
            add_file(&c, env);
    } else {
        find_candidates(&c);
    }
    int found = 0;
    for (int i = 0; i < c.n; i++) {
        if (stat(c.path[i], &st) != 0) continue;
        found = 1;
        if (try_load(c.path[i])) return;
    }
    if (found) return; /* g_err says why each file found was refused */
    if (from_env) {
        note("cuda: backend module not found at SPECTRAL_CUDA_MODULE=%s", env);
        return;
    }
    note("cuda: backend module " SP_CUDA_MODULE_FILE " not found (searched:");
    for (int i = 0; i < c.n; i++) {
        size_t used = strlen(g_err);
        snprintf(g_err + used, sizeof g_err - used, " %s", c.path[i]);
    }
    size_t used = strlen(g_err);
    snprintf(g_err + used, sizeof g_err - used, "; set SPECTRAL_CUDA_MODULE to its path)");
}

const char *sp_cuda_module_path(char *err, size_t err_len) {
    pthread_once(&g_once, load_module);
    if (g_create) return g_path;
    if (err && err_len) snprintf(err, err_len, "%s", g_err);
    return NULL;
}

int sp_backend_cuda_device_count(void) {
    pthread_once(&g_once, load_module);
    return g_device_count ? g_device_count() : 0;
}

sp_backend *sp_backend_cuda_create(int device, char *err, size_t err_len) {
    pthread_once(&g_once, load_module);
    if (!g_create) {
        if (err && err_len) snprintf(err, err_len, "%s", g_err);
        return NULL;
    }
    return g_create(device, err, err_len);
}
