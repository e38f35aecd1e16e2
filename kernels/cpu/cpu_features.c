/* CPUID and XGETBV, read once. See cpu_features.h. */
#include "kernels/cpu/cpu_features.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

/* The OS saves the register state: XCR0 bits 1-2 (SSE, AVX) for YMM, and
 * 5-7 (opmask, ZMM halves) too for AVX-512. */
static unsigned long long xgetbv0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static void detect(sp_cpu_features *f) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    f->fma = (c >> 12) & 1;
    f->f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return;
    const unsigned long long xcr0 = xgetbv0();
    const int os_ymm = (xcr0 & 0x6) == 0x6, os_zmm = (xcr0 & 0xe6) == 0xe6;
    const int os_amx = (xcr0 & 0x60000) == 0x60000;
    if (!os_ymm) {
        f->fma = f->f16c = 0;
        return;
    }
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    f->avx2 = (b >> 5) & 1;
    if (os_zmm) {
        f->avx512f = (b >> 16) & 1;
        f->avx512bw = (b >> 30) & 1;
        f->avx512vl = (b >> 31) & 1;
        f->avx512_vnni = (c >> 11) & 1;
    }
    if (os_amx) {
        f->amx_bf16 = (d >> 22) & 1;
        f->amx_tile = (d >> 24) & 1;
        f->amx_int8 = (d >> 25) & 1;
    }
    __cpuid_count(7, 1, a, b, c, d);
    f->avx_vnni = (a >> 4) & 1;
    if (os_zmm) f->avx512_bf16 = (a >> 5) & 1;
}
#else
static void detect(sp_cpu_features *f) { (void)f; }
#endif

static sp_cpu_features g_features;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void detect_once(void) { detect(&g_features); }

const sp_cpu_features *sp_cpu_features_get(void) {
    pthread_once(&g_once, detect_once);
    return &g_features;
}

void sp_cpu_features_string(char *buf, unsigned long len) {
    const sp_cpu_features *f = sp_cpu_features_get();
    const struct {
        int on;
        const char *name;
    } flags[] = {{f->avx2, "avx2"},           {f->fma, "fma"},
                 {f->f16c, "f16c"},           {f->avx512f, "avx512f"},
                 {f->avx512bw, "avx512bw"},   {f->avx512vl, "avx512vl"},
                 {f->avx512_vnni, "avx512_vnni"}, {f->avx512_bf16, "avx512_bf16"},
                 {f->avx_vnni, "avx_vnni"},   {f->amx_tile, "amx_tile"},
                 {f->amx_int8, "amx_int8"},   {f->amx_bf16, "amx_bf16"}};
    if (!len) return;
    buf[0] = 0;
    size_t used = 0;
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (!flags[i].on) continue;
        const size_t n = strlen(flags[i].name) + (used ? 1 : 0);
        if (used + n + 1 > len) break;
        if (used) buf[used++] = ' ';
        memcpy(buf + used, flags[i].name, strlen(flags[i].name) + 1);
        used += strlen(flags[i].name);
    }
    if (!used && len > 5) memcpy(buf, "none", 5);
}

sp_kernel_level sp_cpu_kernel_cap(void) {
    const sp_cpu_features *f = sp_cpu_features_get();
    sp_kernel_level best = SP_KERNEL_C;
    if (f->avx2 && f->fma) best = SP_KERNEL_AVX2;
    if (best == SP_KERNEL_AVX2 && f->avx512f && f->avx512bw && f->avx512vl) best = SP_KERNEL_AVX512;
    const char *cap = getenv("SPECTRAL_CPU_ISA");
    if (cap && !strcmp(cap, "c")) return SP_KERNEL_C;
    if (cap && !strcmp(cap, "avx2") && best > SP_KERNEL_AVX2) return SP_KERNEL_AVX2;
    return best;
}

const char *sp_kernel_level_name(sp_kernel_level level) {
    switch (level) {
    case SP_KERNEL_C: return "c";
    case SP_KERNEL_AVX2: return "avx2";
    case SP_KERNEL_AVX512: return "avx512";
    case SP_KERNEL_AVX512_EMULATED: return "avx512-emulated";
    }
    return "?";
}
