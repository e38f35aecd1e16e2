/* Size arguments of the command-line tools: see cli_size.h. */
#include "cli_size.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

int cli_parse_size(const char *s, size_t *out) {
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || errno || !(v > 0)) return -1;
    double mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1024.0; end++; break;
    case 'm': case 'M': mul = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    /* A fraction needs a unit: "1.5" alone would silently mean 1 byte. */
    if (mul == 1 && v != floor(v)) return -1;
    if (*end == 'i' && mul > 1) end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return -1;
    double bytes = v * mul;
    if (bytes < 1 || bytes > 1.8e19) return -1;
    *out = (size_t)bytes;
    return 0;
}
