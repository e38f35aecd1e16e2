/* What the runtime's own files share with runtime/spectral.c: the error
 * convention and read access to a loaded model. Internal: not installed. */
#ifndef SP_RUNTIME_INTERNAL_H
#define SP_RUNTIME_INTERNAL_H

#include "spectral.h"

#include "formats/gguf.h"
#include "models/model.h"

/* Sets this thread's spectral_last_error() to the printf-style message and
 * returns s: every failing public entry point ends with it. */
spectral_status sp_fail(spectral_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const sp_weight_list *sp_model_weight_list(const spectral_model *m);
const sp_gguf *sp_model_gguf(const spectral_model *m);

#endif
