/* The AVX-512 micro-kernels (INT8 with VNNI's VPDPBUSD, BF16 with
 * AVX512_BF16's VDPBF16PS), built twice from gemm_avx512_body.h: with the
 * instructions, and with each instruction emulated lane by lane in C (the
 * build the tests run on machines without them). The instruction build is
 * compiled everywhere by function attribute and called only when CPUID
 * reports the instructions. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/packed_cpu.h"

/* ---------------------------------------------------- emulated in C */

typedef struct {
    int32_t v[16];
} emu_vint;
typedef struct {
    float v[16];
} emu_vflt;

#define EMU_MAP(type, expr)                                                                       \
    type r;                                                                                       \
    for (int l = 0; l < 16; l++) r.v[l] = (expr);                                                 \
    return r;
static inline emu_vint emu_vi_zero(void) { EMU_MAP(emu_vint, 0) }
static inline emu_vint emu_vi_load(const void *p) {
    emu_vint r;
    memcpy(r.v, p, sizeof r.v);
    return r;
}
static inline emu_vint emu_vi_set1(int32_t x) { EMU_MAP(emu_vint, x) }
static inline emu_vint emu_vi_xor(emu_vint a, emu_vint b) { EMU_MAP(emu_vint, a.v[l] ^ b.v[l]) }
static inline emu_vint emu_vi_sub(emu_vint a, emu_vint b) {
    EMU_MAP(emu_vint, (int32_t)((uint32_t)a.v[l] - (uint32_t)b.v[l]))
}
/* VPDPBUSD: per lane, four unsigned x signed byte products added to the
 * int32 lane without saturation. */
static inline emu_vint emu_vi_dpbusd(emu_vint acc, emu_vint u, emu_vint s) {
    for (int l = 0; l < 16; l++) {
        uint8_t ub[4];
        int8_t sb[4];
        memcpy(ub, &u.v[l], 4);
        memcpy(sb, &s.v[l], 4);
        int32_t sum = 0;
        for (int e = 0; e < 4; e++) sum += (int32_t)ub[e] * (int32_t)sb[e];
        acc.v[l] = (int32_t)((uint32_t)acc.v[l] + (uint32_t)sum);
    }
    return acc;
}
static inline emu_vflt emu_vf_zero(void) { EMU_MAP(emu_vflt, 0.0f) }
static inline emu_vflt emu_vf_loadu(const float *p) {
    emu_vflt r;
    memcpy(r.v, p, sizeof r.v);
    return r;
}
static inline void emu_vf_storeu(float *p, emu_vflt v) { memcpy(p, v.v, sizeof v.v); }
static inline emu_vflt emu_vf_set1(float x) { EMU_MAP(emu_vflt, x) }
static inline emu_vflt emu_vf_mul(emu_vflt a, emu_vflt b) { EMU_MAP(emu_vflt, a.v[l] * b.v[l]) }
static inline emu_vflt emu_vf_fma(emu_vflt a, emu_vflt b, emu_vflt c) {
    EMU_MAP(emu_vflt, fmaf(a.v[l], b.v[l], c.v[l]))
}
static inline emu_vflt emu_vf_cvt(emu_vint a) { EMU_MAP(emu_vflt, (float)a.v[l]) }
/* VDPBF16PS: lane l holds the (even, odd) pair in its low and high halves. */
static inline emu_vflt emu_vf_dpbf16(emu_vflt acc, emu_vint a, emu_vint b) {
    for (int l = 0; l < 16; l++) {
        const uint32_t x = (uint32_t)a.v[l], w = (uint32_t)b.v[l];
        acc.v[l] = sp_bf16_dot2(acc.v[l], (uint16_t)x, (uint16_t)(x >> 16), (uint16_t)w,
                                (uint16_t)(w >> 16));
    }
    return acc;
}
#undef EMU_MAP

#define vint emu_vint
#define vflt emu_vflt
#define vi_zero emu_vi_zero
#define vi_load emu_vi_load
#define vi_set1 emu_vi_set1
#define vi_xor emu_vi_xor
#define vi_sub emu_vi_sub
#define vi_dpbusd emu_vi_dpbusd
#define vf_zero emu_vf_zero
#define vf_loadu emu_vf_loadu
#define vf_load emu_vf_loadu
#define vf_storeu emu_vf_storeu
#define vf_set1 emu_vf_set1
#define vf_mul emu_vf_mul
#define vf_fma emu_vf_fma
#define vf_cvt emu_vf_cvt
#define vf_dpbf16 emu_vf_dpbf16
#define KERNEL(name) name##_emulated
#define ATTR
#include "kernels/cpu/gemm_avx512_body.h"
#undef vint
#undef vflt
#undef vi_zero
#undef vi_load
#undef vi_set1
#undef vi_xor
#undef vi_sub
#undef vi_dpbusd
#undef vf_zero
#undef vf_loadu
#undef vf_load
#undef vf_storeu
#undef vf_set1
#undef vf_mul
#undef vf_fma
#undef vf_cvt
#undef vf_dpbf16
#undef KERNEL
#undef ATTR

const sp_micro sp_micro_q8_avx512_emulated = {q8_tile_fn_emulated, 8},
               sp_micro_bf16_avx512_emulated = {bf16_tile_fn_emulated, 8};

/* ------------------------------------------------- the instructions */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define ATTR __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16")))
#define vint __m512i
#define vflt __m512
#define vi_zero _mm512_setzero_si512
#define vi_load(p) _mm512_load_si512((const void *)(p))
#define vi_set1 _mm512_set1_epi32
#define vi_xor _mm512_xor_si512
#define vi_sub _mm512_sub_epi32
#define vi_dpbusd _mm512_dpbusd_epi32
#define vf_zero _mm512_setzero_ps
#define vf_loadu _mm512_loadu_ps
#define vf_load _mm512_load_ps
#define vf_storeu _mm512_storeu_ps
#define vf_set1 _mm512_set1_ps
#define vf_mul _mm512_mul_ps
#define vf_fma _mm512_fmadd_ps
#define vf_cvt _mm512_cvtepi32_ps
#define vf_dpbf16(acc, a, b) _mm512_dpbf16_ps((acc), (__m512bh)(a), (__m512bh)(b))
#define KERNEL(name) name##_avx512
#include "kernels/cpu/gemm_avx512_body.h"

const sp_micro sp_micro_q8_avx512 = {q8_tile_fn_avx512, 8},
               sp_micro_bf16_avx512 = {bf16_tile_fn_avx512, 8};
#else
const sp_micro sp_micro_q8_avx512 = {0, 0}, sp_micro_bf16_avx512 = {0, 0};
#endif
