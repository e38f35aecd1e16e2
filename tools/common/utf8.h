/* UTF-8 validation for the programs' JSON writers (spectral-embed's input
 * names, spectral-server's answers): both replace invalid bytes with U+FFFD
 * so that their output always parses. */
#ifndef SPECTRAL_TOOLS_UTF8_H
#define SPECTRAL_TOOLS_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 sequence at p (1-4) within n bytes, or 0 when it
 * is not one (stray continuation, overlong form, surrogate, past U+10FFFF). */
static inline int utf8_len(const unsigned char *p, size_t n) {
    const unsigned c = p[0];
    int k;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) k = 2;
    else if (c >= 0xE0 && c <= 0xEF) k = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) k = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return 0;
    if ((size_t)k > n || p[1] < lo || p[1] > hi) return 0;
    for (int i = 2; i < k; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return k;
}

#endif
