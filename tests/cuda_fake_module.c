/* Stand-ins for libspectral-cuda.so that the loader must refuse
 * (tests/test_cuda_loader.c). Built twice:
 *   FAKE_STALE    exports the module's functions, but its info describes an
 *                 older op table (as a module built before backend.h grew);
 *   FAKE_FOREIGN  a shared object without them.
 * Neither create nor device_count may ever be called: they abort / say 42. */
#include "kernels/cuda/cuda_module.h"

#include <stdlib.h>

#ifdef FAKE_STALE
const sp_cuda_module_info *sp_cuda_module_get_info(void) {
    static const sp_cuda_module_info info = {SP_CUDA_MODULE_ABI,
                                             (uint32_t)sizeof(sp_backend_ops) - 2 * sizeof(void *),
                                             (uint32_t)sizeof(sp_backend), SP_CUDA_MODULE_VERSION};
    return &info;
}

sp_backend *sp_cuda_module_create(int device, char *err, size_t err_len) {
    (void)device, (void)err, (void)err_len;
    abort();
}

int sp_cuda_module_device_count(void) { return 42; }
#else
int sp_cuda_fake_foreign(void) { return 42; }
#endif
