// v3lab's CUDA emulator, cuBLAS side: a libcublas.so with the f32 GEMMs the backend calls,
// column-major as cuBLAS defines them. Each output is summed over k in order in f32, as a
// plain f32 GEMM; real cuBLAS sums in another order (the suite's tolerances cover that).
#include <stddef.h>
#include <stdint.h>

typedef int cublasStatus_t;
enum : int { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7 };
enum : int { OP_N = 0, OP_T = 1 };

namespace {
int g_handle;

// C = alpha · op(A) · op(B) + beta · C, column-major; op(A) is m×k, op(B) k×n.
void sgemm(int ta, int tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb, float beta,
           float* c, int ldc) {
    for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) {
            float acc = 0.0f;
            for (int p = 0; p < k; ++p) {
                const float av = ta == OP_N ? a[i + (int64_t)p * lda] : a[p + (int64_t)i * lda];
                const float bv = tb == OP_N ? b[p + (int64_t)j * ldb] : b[j + (int64_t)p * ldb];
                acc += av * bv;
            }
            float& out = c[i + (int64_t)j * ldc];
            out = beta == 0.0f ? alpha * acc : alpha * acc + beta * out;  // beta 0: C is not read
        }
}

bool valid(int ta, int tb, int m, int n, int k, int lda, int ldb, int ldc) {
    if (m < 0 || n < 0 || k < 0 || (ta != OP_N && ta != OP_T) || (tb != OP_N && tb != OP_T)) return false;
    const int rows_a = ta == OP_N ? m : k, rows_b = tb == OP_N ? k : n;
    return lda >= (rows_a > 1 ? rows_a : 1) && ldb >= (rows_b > 1 ? rows_b : 1) && ldc >= (m > 1 ? m : 1);
}
}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(void** handle) {
    *handle = &g_handle;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(void*) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream_v2(void*, void*) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(void*, int) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasGetMathMode(void*, int* mode) {
    *mode = 0;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm_v2(void*, int ta, int tb, int m, int n, int k, const float* alpha, const float* a, int lda,
                              const float* b, int ldb, const float* beta, float* c, int ldc) {
    if (!valid(ta, tb, m, n, k, lda, ldb, ldc)) return CUBLAS_STATUS_INVALID_VALUE;
    sgemm(ta, tb, m, n, k, *alpha, a, lda, b, ldb, *beta, c, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemmStridedBatched(void*, int ta, int tb, int m, int n, int k, const float* alpha, const float* a,
                                         int lda, long long stride_a, const float* b, int ldb, long long stride_b,
                                         const float* beta, float* c, int ldc, long long stride_c, int batches) {
    if (!valid(ta, tb, m, n, k, lda, ldb, ldc) || batches < 0) return CUBLAS_STATUS_INVALID_VALUE;
    for (int i = 0; i < batches; ++i)
        sgemm(ta, tb, m, n, k, *alpha, a + i * stride_a, lda, b + i * stride_b, ldb, *beta, c + i * stride_c, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
