// Generates tests/data/ggml_kernels.jsonl: activation quantization and vec-dot results computed by
// ggml's own CPU backend code, for tests/kernels_reference.rs. Not built by cargo.
//
// Build against a ggml checkout (ggml-org/ggml d99724f2 was used) on x86-64. Four objects, each built
// the way the result it provides needs:
//   F="-I$GGML/include -I$GGML/src -I$GGML/src/ggml-cpu"
//   gcc -O2 -ffp-contract=off $F -c $GGML/src/ggml-quants.c -o quants_ref.o          # *_ref
//   gcc -O2 -ffp-contract=off $F -c $GGML/src/ggml-cpu/quants.c -o quants_generic.o  # *_generic dots
//   g++ -O2 -ffp-contract=off $F -c $GGML/src/ggml-cpu/vec.cpp -o vec_scalar.o       # no -m flags: no
//                                                           # GGML_SIMD, so the scalar f32/f16/bf16 dots
//   gcc -O2 -march=native $F -c $GGML/src/ggml-cpu/arch/x86/quants.c -o quants_x86.o # what llama.cpp
//                                       # runs on x86: AVX2 quantize_row_q8_0/_q8_1, SIMD dots
//   gcc -O2 -ffp-contract=off $F gen_ggml_kernels.c *.o -lstdc++ -lm -o gen && ./gen > ggml_kernels.jsonl
// (x86 quants.o must come from an AVX2 machine; the committed file was made on an AVX-512 one.)
//
// Records, one JSON object per line, byte buffers base64, floats printed with %.9g (exact for f32):
//   {"kind":"quant","type":T,"n":N,"x":f32[N],"q":bytes,"q_ref":bytes?}
//       q = what ggml's CPU backend stores for activation row x as vec-dot type T (Q8_0/Q8_1: the
//       x86 AVX2 quantize_row_q8_0/_q8_1; Q8_K: quantize_row_q8_K, which is the _ref one on x86;
//       F16/BF16: GGML_FP32_TO_FP16/BF16, what ggml_cpu_fp32_to_fp16/bf16 compute). q_ref (Q8_0/Q8_1
//       only) = quantize_row_q8_*_ref, which rounds ties away from zero and divides differently.
//   {"kind":"dot","type":W,"k":K,"n":N,"m":M,"w":bytes,"x":f32[M*K],"xq":bytes,
//    "generic":[M*N],"simd":[M*N]?}
//       w = N random rows of weight type W; xq = x quantized as above; generic[i*N+j] = the
//       *_generic (or scalar ggml_vec_dot_f16/bf16/f32) dot of w row j with xq row i; simd = the same
//       with the x86 build's ggml_vec_dot_* (quantized types only).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-common.h"
#include "ggml-impl.h"
#include "ggml-quants.h"
#include "quants.h"

void ggml_abort(const char * file, int line, const char * fmt, ...) { (void) file; (void) line; (void) fmt; abort(); }
size_t ggml_row_size(enum ggml_type t, int64_t n) { (void) t; (void) n; abort(); }
const char * ggml_type_name(enum ggml_type t) { (void) t; abort(); }
size_t ggml_type_size(enum ggml_type t) { (void) t; abort(); }
// Normally defined and filled by ggml_cpu_init() in ggml-cpu.c.
float ggml_table_f32_f16[1 << 16];
float ggml_table_f32_e8m0_half[1 << 8];
float ggml_table_f32_ue4m3[1 << 8];

// vec.cpp (C linkage; vec.h itself is C++-only).
void ggml_vec_dot_f32(int n, float * s, size_t bs, const float * x, size_t bx, const float * y, size_t by, int nrc);
void ggml_vec_dot_f16(int n, float * s, size_t bs, ggml_fp16_t * x, size_t bx, ggml_fp16_t * y, size_t by, int nrc);
void ggml_vec_dot_bf16(int n, float * s, size_t bs, ggml_bf16_t * x, size_t bx, ggml_bf16_t * y, size_t by, int nrc);

typedef void (*dot_fn)(int, float *, size_t, const void *, size_t, const void *, size_t, int);
typedef void (*quant_fn)(const float *, void *, int64_t);

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t next_u32(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t) (rng >> 16);
}
static float uniform(void) { return (float) (next_u32() & 0xffffff) / 16777216.0f; }
// Random finite float: sign * [1,2) * 2^e with e in [lo, hi].
static float rand_scale(int lo, int hi) {
    float m = 1.0f + (float) (next_u32() & 0xffff) / 65536.0f;
    int e = lo + (int) (next_u32() % (uint32_t) (hi - lo + 1));
    return ((next_u32() & 1) ? -1.0f : 1.0f) * ldexpf(m, e);
}
static ggml_half rand_half(void) { return GGML_FP32_TO_FP16(rand_scale(-14, 3)); }

// Activation-like rows: roughly normal values, a per-row scale, occasional outliers.
static void fill_x(float * x, int n) {
    float scale = ldexpf(1.0f, -6 + (int) (next_u32() % 10));
    for (int i = 0; i < n; i++) {
        float g = uniform() + uniform() + uniform() + uniform() - 2.0f;
        if (next_u32() % 64 == 0) g *= 20.0f;
        x[i] = g * scale;
    }
}

static void b64(const void * vp, size_t n) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const uint8_t * p = vp;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t) p[i] << 16 | (i + 1 < n ? (uint32_t) p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        putchar(t[v >> 18 & 63]);
        putchar(t[v >> 12 & 63]);
        putchar(i + 1 < n ? t[v >> 6 & 63] : '=');
        putchar(i + 2 < n ? t[v & 63] : '=');
    }
}
static void floats(const float * v, int n) {
    putchar('[');
    for (int i = 0; i < n; i++) printf(i ? ", %.9g" : "%.9g", (double) v[i]);
    putchar(']');
}

// ---------------------------------------------------------------- activation quantization records

static void to_f16(const float * x, void * y, int64_t n) {
    for (int64_t i = 0; i < n; i++) ((ggml_fp16_t *) y)[i] = GGML_FP32_TO_FP16(x[i]);
}
static void to_bf16(const float * x, void * y, int64_t n) {
    for (int64_t i = 0; i < n; i++) ((ggml_bf16_t *) y)[i] = GGML_FP32_TO_BF16(x[i]);
}

static int count_diff(const uint8_t * a, const uint8_t * b, size_t n) {
    int d = 0;
    for (size_t i = 0; i < n; i++) d += a[i] != b[i];
    return d;
}

static void quant_record(const char * name, quant_fn f, quant_fn ref, size_t out_bytes, const float * x, int n) {
    uint8_t * q = calloc(out_bytes, 1), * qr = calloc(out_bytes, 1);
    f(x, q, n);
    printf("{\"kind\": \"quant\", \"type\": \"%s\", \"n\": %d, \"x\": \"", name, n);
    b64(x, (size_t) n * 4);
    printf("\", \"q\": \"");
    b64(q, out_bytes);
    if (ref) {
        ref(x, qr, n);
        printf("\", \"q_ref\": \"");
        b64(qr, out_bytes);
        fprintf(stderr, "%s: x86 and _ref differ in %d of %zu bytes\n", name, count_diff(q, qr, out_bytes), out_bytes);
    }
    printf("\"}\n");
    free(q);
    free(qr);
}

static void quant_ref_q8_0(const float * x, void * y, int64_t k) { quantize_row_q8_0_ref(x, y, k); }
static void quant_ref_q8_1(const float * x, void * y, int64_t k) { quantize_row_q8_1_ref(x, y, k); }

// Blocks that exercise the corners: random, all zero, exact rounding ties (max 127 makes d = 1 and
// the multiplier exactly 1), a negative extreme, tiny values (subnormal f16 scale) and values so
// large the f16 scale overflows to inf.
static void special_blocks(float * x, int qk, int nblocks) {
    for (int b = 0; b < nblocks; b++) {
        float * v = x + b * qk;
        switch (b % 6) {
        case 0: fill_x(v, qk); break;
        case 1: memset(v, 0, (size_t) qk * 4); break;
        case 2:
            for (int i = 0; i < qk; i++) v[i] = (float) ((int) (next_u32() % 200) - 100) + 0.5f;
            v[qk / 2] = 127.0f;
            break;
        case 3: fill_x(v, qk); v[3] = -4.0f * fabsf(v[3]) - 1.0f; break;
        case 4: fill_x(v, qk); for (int i = 0; i < qk; i++) v[i] *= 1e-9f; break;
        case 5: fill_x(v, qk); v[qk - 1] = 1e7f; break;
        }
    }
}

static void quant_records(void) {
    static float x[12 * QK_K];
    special_blocks(x, QK8_0, 12);
    quant_record("Q8_0", quantize_row_q8_0, quant_ref_q8_0, 12 * sizeof(block_q8_0), x, 12 * QK8_0);
    special_blocks(x, QK8_1, 12);
    quant_record("Q8_1", quantize_row_q8_1, quant_ref_q8_1, 12 * sizeof(block_q8_1), x, 12 * QK8_1);
    special_blocks(x, QK_K, 6);
    quant_record("Q8_K", quantize_row_q8_K, NULL, 6 * sizeof(block_q8_K), x, 6 * QK_K);
    fill_x(x, 256);
    x[0] = 1e-7f; x[1] = -7e4f; x[2] = 65519.0f; x[3] = 1.00048828125f; x[4] = 1.0f + 1.0f / 4096.0f;
    quant_record("F16", to_f16, NULL, 256 * 2, x, 256);
    fill_x(x, 256);
    x[0] = 1e-39f; x[1] = 3e38f; x[2] = 1.0f + 1.0f / 256.0f; x[3] = 1.0f + 3.0f / 256.0f;
    quant_record("BF16", to_bf16, NULL, 256 * 2, x, 256);
}

// ------------------------------------------------------------------------------ dot records

struct wtype {
    const char * name;
    int qk;            // values per weight block
    size_t wsize;      // bytes per weight block
    size_t asize;      // bytes per activation block (of the vec-dot type, same qk)
    quant_fn quant;    // activation quantizer (x86 build)
    dot_fn generic, simd;
    int halves[2];     // byte offsets of f16 scale fields to set to finite values (-1: none)
};

static void fill_weights(const struct wtype * t, uint8_t * w, int nblocks) {
    if (t->qk == 1) {
        // Plain float weights: random bytes would be NaN/inf too often; use activation-like values
        // stored by the same conversion the activations get.
        float * v = malloc((size_t) nblocks * 4);
        fill_x(v, nblocks);
        t->quant(v, w, nblocks);
        free(v);
        return;
    }
    for (size_t i = 0; i < (size_t) nblocks * t->wsize; i++) w[i] = (uint8_t) next_u32();
    for (int b = 0; b < nblocks; b++) {
        for (int h = 0; h < 2; h++) {
            if (t->halves[h] < 0) continue;
            ggml_half v = rand_half();
            memcpy(w + (size_t) b * t->wsize + t->halves[h], &v, 2);
        }
    }
}

static void dot_record(const struct wtype * t, int k, int n, int m) {
    const int nb = k / t->qk;
    const size_t wrow = (size_t) nb * t->wsize, arow = (size_t) nb * t->asize;
    uint8_t * w = malloc(wrow * n), * xq = calloc(arow * m, 1);
    float * x = malloc((size_t) m * k * 4), * gen = malloc((size_t) m * n * 4), * simd = malloc((size_t) m * n * 4);
    fill_weights(t, w, nb * n);
    for (int i = 0; i < m; i++) {
        fill_x(x + (size_t) i * k, k);
        t->quant(x + (size_t) i * k, xq + i * arow, k);
    }
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            t->generic(k, &gen[i * n + j], 0, w + j * wrow, 0, xq + i * arow, 0, 1);
            if (t->simd) t->simd(k, &simd[i * n + j], 0, w + j * wrow, 0, xq + i * arow, 0, 1);
        }
    }
    printf("{\"kind\": \"dot\", \"type\": \"%s\", \"k\": %d, \"n\": %d, \"m\": %d, \"w\": \"", t->name, k, n, m);
    b64(w, wrow * n);
    printf("\", \"x\": \"");
    b64(x, (size_t) m * k * 4);
    printf("\", \"xq\": \"");
    b64(xq, arow * m);
    printf("\", \"generic\": ");
    floats(gen, m * n);
    if (t->simd) {
        printf(", \"simd\": ");
        floats(simd, m * n);
    }
    printf("}\n");
    free(w); free(xq); free(x); free(gen); free(simd);
}

static void dot_f32(int n, float * s, size_t bs, const void * x, size_t bx, const void * y, size_t by, int nrc) {
    ggml_vec_dot_f32(n, s, bs, x, bx, y, by, nrc);
}
static void dot_f16(int n, float * s, size_t bs, const void * x, size_t bx, const void * y, size_t by, int nrc) {
    ggml_vec_dot_f16(n, s, bs, (ggml_fp16_t *) x, bx, (ggml_fp16_t *) y, by, nrc);
}
static void dot_bf16(int n, float * s, size_t bs, const void * x, size_t bx, const void * y, size_t by, int nrc) {
    ggml_vec_dot_bf16(n, s, bs, (ggml_bf16_t *) x, bx, (ggml_bf16_t *) y, by, nrc);
}
static void copy_f32(const float * x, void * y, int64_t n) { memcpy(y, x, (size_t) n * 4); }

#define OFF(BT, F) ((int) offsetof(BT, F))

int main(void) {
    for (int i = 0; i < (1 << 16); i++) ggml_table_f32_f16[i] = GGML_COMPUTE_FP16_TO_FP32((ggml_fp16_t) i);

    const struct wtype types[] = {
        { "Q4_0", QK4_0, sizeof(block_q4_0), sizeof(block_q8_0), quantize_row_q8_0, ggml_vec_dot_q4_0_q8_0_generic, ggml_vec_dot_q4_0_q8_0, { OFF(block_q4_0, d), -1 } },
        { "Q4_1", QK4_1, sizeof(block_q4_1), sizeof(block_q8_1), quantize_row_q8_1, ggml_vec_dot_q4_1_q8_1_generic, ggml_vec_dot_q4_1_q8_1, { 0, 2 } },
        { "Q5_0", QK5_0, sizeof(block_q5_0), sizeof(block_q8_0), quantize_row_q8_0, ggml_vec_dot_q5_0_q8_0_generic, ggml_vec_dot_q5_0_q8_0, { OFF(block_q5_0, d), -1 } },
        { "Q5_1", QK5_1, sizeof(block_q5_1), sizeof(block_q8_1), quantize_row_q8_1, ggml_vec_dot_q5_1_q8_1_generic, ggml_vec_dot_q5_1_q8_1, { 0, 2 } },
        { "Q8_0", QK8_0, sizeof(block_q8_0), sizeof(block_q8_0), quantize_row_q8_0, ggml_vec_dot_q8_0_q8_0_generic, ggml_vec_dot_q8_0_q8_0, { OFF(block_q8_0, d), -1 } },
        { "Q2_K", QK_K, sizeof(block_q2_K), sizeof(block_q8_K), quantize_row_q8_K, ggml_vec_dot_q2_K_q8_K_generic, ggml_vec_dot_q2_K_q8_K, { OFF(block_q2_K, d), OFF(block_q2_K, dmin) } },
        { "Q3_K", QK_K, sizeof(block_q3_K), sizeof(block_q8_K), quantize_row_q8_K, ggml_vec_dot_q3_K_q8_K_generic, ggml_vec_dot_q3_K_q8_K, { OFF(block_q3_K, d), -1 } },
        { "Q4_K", QK_K, sizeof(block_q4_K), sizeof(block_q8_K), quantize_row_q8_K, ggml_vec_dot_q4_K_q8_K_generic, ggml_vec_dot_q4_K_q8_K, { OFF(block_q4_K, d), OFF(block_q4_K, dmin) } },
        { "Q5_K", QK_K, sizeof(block_q5_K), sizeof(block_q8_K), quantize_row_q8_K, ggml_vec_dot_q5_K_q8_K_generic, ggml_vec_dot_q5_K_q8_K, { OFF(block_q5_K, d), OFF(block_q5_K, dmin) } },
        { "Q6_K", QK_K, sizeof(block_q6_K), sizeof(block_q8_K), quantize_row_q8_K, ggml_vec_dot_q6_K_q8_K_generic, ggml_vec_dot_q6_K_q8_K, { OFF(block_q6_K, d), -1 } },
        // Plain types: "blocks" of one value, no SIMD result (llama.cpp's x86 build sends these
        // through llamafile's sgemm, not ggml_vec_dot_*).
        { "F32", 1, 4, 4, copy_f32, dot_f32, NULL, { -1, -1 } },
        { "F16", 1, 2, 2, to_f16, dot_f16, NULL, { -1, -1 } },
        { "BF16", 1, 2, 2, to_bf16, dot_bf16, NULL, { -1, -1 } },
    };

    quant_records();
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const struct wtype * t = &types[i];
        const int k = t->qk == QK_K ? 2 * QK_K : t->qk == 1 ? 256 : 8 * t->qk;
        dot_record(t, k, 3, 2);
        // Long rows for accumulation order (the K-quant dots keep 8 float lanes across blocks).
        if (!strcmp(t->name, "Q4_0") || !strcmp(t->name, "Q4_1") || !strcmp(t->name, "Q4_K") || !strcmp(t->name, "Q6_K")) {
            dot_record(t, 2048, 1, 1);
        }
    }
    return 0;
}
