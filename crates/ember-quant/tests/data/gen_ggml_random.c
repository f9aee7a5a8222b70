// Generates tests/data/ggml_random.jsonl: random blocks of every quantized type ember supports,
// dequantized by ggml's own `dequantize_row_*` (ggml/src/ggml-quants.c). Not built by cargo.
//
// Build against a ggml checkout (ggml-org/ggml d99724f2 was used), no FMA contraction:
//   gcc -O2 -ffp-contract=off -I$GGML/include -I$GGML/src -c $GGML/src/ggml-quants.c -o quants.o
//   gcc -O2 -ffp-contract=off -I$GGML/include -I$GGML/src gen_ggml_random.c quants.o -lm -o gen
//   ./gen > ggml_random.jsonl
// (ggml_abort and friends are stubbed below; the dequantizers never call them.)
//
// Every byte is random except the scale fields, which are set to random finite values of either sign
// over a wide exponent range, so the output is finite and can be written as JSON.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-common.h"
#include "ggml-impl.h"
#include "ggml-quants.h"

void ggml_abort(const char * file, int line, const char * fmt, ...) { (void) file; (void) line; (void) fmt; abort(); }
size_t ggml_row_size(enum ggml_type t, int64_t n) { (void) t; (void) n; abort(); }
const char * ggml_type_name(enum ggml_type t) { (void) t; abort(); }
size_t ggml_type_size(enum ggml_type t) { (void) t; abort(); }

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next_u32(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t) (rng >> 16);
}
// Random finite float: sign * [1,2) * 2^e with e in [lo, hi].
static float rand_scale(int lo, int hi) {
    float m = 1.0f + (float) (next_u32() & 0xffff) / 65536.0f;
    int e = lo + (int) (next_u32() % (uint32_t) (hi - lo + 1));
    return ((next_u32() & 1) ? -1.0f : 1.0f) * ldexpf(m, e);
}
static ggml_half rand_half(void) { return GGML_FP32_TO_FP16(rand_scale(-14, 3)); }

static void b64(const uint8_t * p, size_t n) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t) p[i] << 16 | (i + 1 < n ? (uint32_t) p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        putchar(t[v >> 18 & 63]);
        putchar(t[v >> 12 & 63]);
        putchar(i + 1 < n ? t[v >> 6 & 63] : '=');
        putchar(i + 2 < n ? t[v & 63] : '=');
    }
}

#define BLOCKS_PER_ROW 2
#define ROWS 2
#define MAXB (BLOCKS_PER_ROW * ROWS)

static void emit(const char * name, const void * data, size_t bytes, const float * y, int row_len) {
    printf("{\"type\": \"%s\", \"model\": \"random blocks (ggml d99724f2)\", \"tensor\": \"random\", "
           "\"row_len\": %d, \"rows\": %d, \"raw_b64\": \"", name, row_len, ROWS);
    b64((const uint8_t *) data, bytes);
    printf("\", \"values\": [");
    for (int r = 0; r < ROWS; r++) {
        printf(r ? ", [" : "[");
        for (int i = 0; i < row_len; i++) {
            float v = y[r * row_len + i];
            if (i) printf(", ");
            if (v == 0.0f) printf(signbit(v) ? "-0.0" : "0.0"); // keep the sign of zero through JSON
            else printf("%.9g", (double) v);
        }
        printf("]");
    }
    printf("]}\n");
}

static void fill(void * p, size_t n) {
    for (size_t i = 0; i < n; i++) ((uint8_t *) p)[i] = (uint8_t) next_u32();
}

#define CASE(NAME, BT, QKV, FIX, DEQ)                                   \
    do {                                                                \
        BT b[MAXB];                                                     \
        float y[MAXB * QKV];                                            \
        fill(b, sizeof b);                                              \
        for (int i = 0; i < MAXB; i++) { FIX; }                         \
        DEQ((const BT *) b, y, MAXB * QKV);                             \
        emit(NAME, b, sizeof b, y, BLOCKS_PER_ROW * QKV);               \
    } while (0)

int main(void) {
    CASE("Q4_0", block_q4_0, QK4_0, b[i].d = rand_half(), dequantize_row_q4_0);
    CASE("Q4_1", block_q4_1, QK4_1, (b[i].d = rand_half(), b[i].m = rand_half()), dequantize_row_q4_1);
    CASE("Q5_0", block_q5_0, QK5_0, b[i].d = rand_half(), dequantize_row_q5_0);
    CASE("Q5_1", block_q5_1, QK5_1, (b[i].d = rand_half(), b[i].m = rand_half()), dequantize_row_q5_1);
    CASE("Q8_0", block_q8_0, QK8_0, b[i].d = rand_half(), dequantize_row_q8_0);
    CASE("Q2_K", block_q2_K, QK_K, (b[i].d = rand_half(), b[i].dmin = rand_half()), dequantize_row_q2_K);
    CASE("Q3_K", block_q3_K, QK_K, b[i].d = rand_half(), dequantize_row_q3_K);
    CASE("Q4_K", block_q4_K, QK_K, (b[i].d = rand_half(), b[i].dmin = rand_half()), dequantize_row_q4_K);
    CASE("Q5_K", block_q5_K, QK_K, (b[i].d = rand_half(), b[i].dmin = rand_half()), dequantize_row_q5_K);
    CASE("Q6_K", block_q6_K, QK_K, b[i].d = rand_half(), dequantize_row_q6_K);
    CASE("Q8_K", block_q8_K, QK_K, b[i].d = rand_scale(-30, 10), dequantize_row_q8_K);
    return 0;
}
