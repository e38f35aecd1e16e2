/* Built instead of backend_cuda.cu when spectral is configured without CUDA:
 * the CUDA constructor always fails with a clear message and no device is
 * ever visible. */
#include "kernels/backend.h"

#include <stdio.h>

sp_backend *sp_backend_cuda_create(int device, char *err, size_t err_len) {
    (void)device;
    if (err && err_len)
        snprintf(err, err_len, "this build of spectral has no CUDA backend (rebuild with "
                               "-DSPECTRAL_CUDA=ON and the CUDA Toolkit)");
    return NULL;
}

int sp_backend_cuda_device_count(void) { return 0; }
