/*
 * gemm.c - a matrix kernel's products, through OpenBLAS's cblas_sgemm.
 *
 * jopt never multiplies matrices itself: each product of a spec is a GEMM
 * that the batch cuts into blocks of its result (cg_gemm_tiles: fixed by
 * the sizes) and runs on jopt's own pool, one sgemm per block.  A product
 * of a matrix with its own transpose (Muon's X Xᵀ, and G G with G so made)
 * takes the blocks on and below the diagonal, by ssyrk on the diagonal,
 * and copies each to its mirror image: half the multiply-adds.
 * OpenBLAS is therefore asked for one thread, once per process, when the
 * first matrix kernel is built: its own pool would otherwise start as many
 * threads again under each of jopt's (docs/matrices.md).  The JIT and the
 * reference engine make the same calls, so they agree bit for bit, and the
 * cut does not depend on the thread count, so neither does a result.
 *
 * Debian 12's OpenBLAS (0.3.21) has no bfloat16 GEMM (cblas_sbgemm): a
 * spec that rounds to bfloat16 (bf16()) gives sgemm operands that bfloat16
 * holds exactly, which float32 multiplies exactly, and rounds the float32
 * sums, as torch's bfloat16 GEMM does on a CPU without one.
 */
#include <cblas.h>
#include <pthread.h>

#include "cg_int.h"

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static void blas_single_thread(void)
{
    openblas_set_num_threads(1);
}

void cg_gemm_init(void)
{
    pthread_once(&blas_once, blas_single_thread);
}

/* the block of C at (row0, col0), rows x cols, from the one at
 * (col0, row0): a symmetric product's upper part (on the diagonal, its
 * strict upper triangle); in 16 x 16 tiles, so that the strided side of
 * the copy stays in cache */
static void mirror(float *c, int64_t ldc, int64_t row0, int64_t col0, int64_t rows,
                   int64_t cols)
{
    for (int64_t i0 = 0; i0 < rows; i0 += 16)
        for (int64_t j0 = row0 == col0 ? i0 : 0; j0 < cols; j0 += 16)
            for (int64_t i = i0; i < i0 + 16 && i < rows; i++)
                for (int64_t j = j0; j < j0 + 16 && j < cols; j++)
                    if (row0 != col0 || j > i)
                        c[(row0 + i) * ldc + col0 + j] = c[(col0 + j) * ldc + row0 + i];
}

void cg_gemm_run(const cg_gemm *m, float *const *arrays, int64_t row0,
                 int64_t rows, int64_t col0, int64_t cols)
{
    /* rows of op(A): rows of A, or columns of a transposed one; columns
     * of op(B): columns of B, or rows of a transposed one */
    const float *a = arrays[m->a] + (m->ta ? row0 : row0 * m->lda);
    const float *b = arrays[m->b] + (m->tb ? col0 * m->ldb : col0);
    float *c = arrays[m->c];
    if (m->sym && row0 == col0) { /* a block on the diagonal: its lower half */
        cblas_ssyrk(CblasRowMajor, CblasLower, m->ta ? CblasTrans : CblasNoTrans,
                    (blasint)rows, (blasint)m->k, 1.0f, a, (blasint)m->lda, 0.0f,
                    c + row0 * m->n + col0, (blasint)m->n);
    } else {
        cblas_sgemm(CblasRowMajor, m->ta ? CblasTrans : CblasNoTrans,
                    m->tb ? CblasTrans : CblasNoTrans, (blasint)rows, (blasint)cols,
                    (blasint)m->k, 1.0f, a, (blasint)m->lda, b, (blasint)m->ldb, 0.0f,
                    c + row0 * m->n + col0, (blasint)m->n);
    }
    if (m->sym)
        mirror(c, m->n, col0, row0, cols, rows);
}
