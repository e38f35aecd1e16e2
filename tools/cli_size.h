/* Size arguments of the command-line tools (--mem-limit, --max-body). */
#ifndef SPECTRAL_TOOLS_CLI_SIZE_H
#define SPECTRAL_TOOLS_CLI_SIZE_H

#include <stddef.h>

/* Parses sizes like 512M, 1.5G, 4096, 64KiB (k/m/g/t, powers of 1024, an
 * optional "iB"/"B"). A fraction needs a unit: "1.5" alone is refused rather
 * than read as 1 byte. Returns 0, or -1 when s is not such a size. */
int cli_parse_size(const char *s, size_t *out);

#endif
