/* The contract between libspectral.a and the CUDA backend module.
 *
 * The CUDA backend (backend_cuda.cu and the other .cu files here) is built as
 * a separate shared module, libspectral-cuda.so, linked to cudart, cuFFT and
 * cuBLAS. libspectral.a holds only a loader (backend_cuda_loader.c) that
 * dlopen()s the module the first time sp_backend_cuda_create() or
 * sp_backend_cuda_device_count() is called, so a program that never asks for
 * CUDA never maps those libraries (about 200 MB and 0.2 s at start-up).
 *
 * The module exports exactly the three functions below (everything else in it
 * has hidden visibility) and needs no symbol from libspectral.a (it is linked
 * with -z defs). The loader calls sp_cuda_module_get_info() first and refuses
 * a module whose info differs from its own: one built from another version of
 * spectral or against another layout of kernels/backend.h. */
#ifndef SP_CUDA_MODULE_H
#define SP_CUDA_MODULE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "runtime/spectral.h" /* SPECTRAL_VERSION_* */

#ifdef __cplusplus
extern "C" {
#endif

/* File name of the module (see docs/cuda.md for where it is looked for). */
#define SP_CUDA_MODULE_FILE "libspectral-cuda.so"
/* Bump when the functions below change their meaning or signature. */
#define SP_CUDA_MODULE_ABI 1

#define SP_CUDA_STR_(x) #x
#define SP_CUDA_STR(x) SP_CUDA_STR_(x)
#define SP_CUDA_MODULE_VERSION                                                                     \
    SP_CUDA_STR(SPECTRAL_VERSION_MAJOR)                                                            \
    "." SP_CUDA_STR(SPECTRAL_VERSION_MINOR) "." SP_CUDA_STR(SPECTRAL_VERSION_PATCH)

typedef struct sp_cuda_module_info {
    uint32_t abi;          /* SP_CUDA_MODULE_ABI */
    uint32_t ops_size;     /* sizeof(sp_backend_ops) */
    uint32_t backend_size; /* sizeof(sp_backend) */
    const char *version;   /* SP_CUDA_MODULE_VERSION */
} sp_cuda_module_info;

/* The exported functions, and the types the loader casts dlsym()'s results to. */
const sp_cuda_module_info *sp_cuda_module_get_info(void);
/* As sp_backend_cuda_create / sp_backend_cuda_device_count in backend.h. */
sp_backend *sp_cuda_module_create(int device, char *err, size_t err_len);
int sp_cuda_module_device_count(void);

typedef const sp_cuda_module_info *(*sp_cuda_module_get_info_fn)(void);
typedef sp_backend *(*sp_cuda_module_create_fn)(int device, char *err, size_t err_len);
typedef int (*sp_cuda_module_device_count_fn)(void);

/* The loader's view, for tests and --verbose output (libspectral.a only):
 * loads the module if that has not been tried yet, then returns its path, or
 * NULL when it could not be loaded (the reason is then copied into err). */
const char *sp_cuda_module_path(char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
