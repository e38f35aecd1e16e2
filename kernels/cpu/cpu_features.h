/* What this CPU can run, read once from CPUID, and which GEMM kernels the
 * CPU backend picks from it (kernels/cpu/packed_cpu.c).
 *
 * A kernel level is the instruction set a kernel family is written for.
 * Every compute type has a portable C kernel; the others need their
 * instructions and the operating system's support for the register state
 * (XGETBV): a CPU with AVX-512 under an OS that does not save ZMM state
 * runs the AVX2 kernels. SPECTRAL_CPU_ISA=c|avx2|avx512 caps the level for
 * benchmarks and tests (never raises it past what CPUID reports). */
#ifndef SP_CPU_FEATURES_H
#define SP_CPU_FEATURES_H

typedef struct {
    int avx2, fma, f16c;
    int avx512f, avx512bw, avx512vl;
    int avx512_vnni, avx512_bf16; /* vpdpbusd, vdpbf16ps on ZMM */
    int avx_vnni;                 /* vpdpbusd on YMM (not used: listed for reports) */
    int amx_tile, amx_int8, amx_bf16; /* not used: listed for reports */
} sp_cpu_features;

typedef enum {
    SP_KERNEL_C = 0,      /* portable C: the reference every other level equals */
    SP_KERNEL_AVX2 = 1,   /* AVX2 + FMA */
    SP_KERNEL_AVX512 = 2, /* AVX-512 F/BW/VL with VNNI (int8) or BF16 (bf16) */
    /* The AVX-512 kernels' code with each instruction emulated lane by lane
     * in C: runs anywhere, so the AVX-512 kernels' loops and layouts are
     * tested on machines without the instructions. Never chosen by the
     * backend; tests name it. */
    SP_KERNEL_AVX512_EMULATED = 3,
} sp_kernel_level;

/* The features of the running CPU and OS (detected once, thread-safe). */
const sp_cpu_features *sp_cpu_features_get(void);
/* "avx2 fma avx512f ... " for reports: the flags above that are set. */
void sp_cpu_features_string(char *buf, unsigned long len);
/* The best level CPUID allows, capped by SPECTRAL_CPU_ISA when set. */
sp_kernel_level sp_cpu_kernel_cap(void);
const char *sp_kernel_level_name(sp_kernel_level level);

#endif
