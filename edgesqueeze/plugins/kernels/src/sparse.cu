// 2:4 structured-sparse and CSR convolution / GEMM kernels (instantiations) and their host launchers.
// The kernel part compiles with nvcc and with NVRTC (edgesqueeze plugins check); the launchers only with nvcc.
#include "esq/sparse.cuh"

namespace esq {

template __global__ void sparse24_kernel<float>(SparseConvParams, const float*, const float*, const int*,
                                                const float*, float*);
template __global__ void sparse24_kernel<half_t>(SparseConvParams, const half_t*, const half_t*, const int*,
                                                 const half_t*, half_t*);
template __global__ void sparse_csr_kernel<float>(SparseConvParams, const float*, const float*, const int*,
                                                  const int*, const float*, float*);
template __global__ void sparse_csr_kernel<half_t>(SparseConvParams, const half_t*, const half_t*, const int*,
                                                   const int*, const half_t*, half_t*);

}  // namespace esq

#ifndef __CUDACC_RTC__
#include "esq/launch.h"

namespace esq {

namespace {
const int kSparseThreads = 256;

unsigned int sparse_blocks(const SparseConvParams& p) {
    long long outputs = (long long)p.N * p.M * p.OH * p.OW;
    return (unsigned int)((outputs + kSparseThreads - 1) / kSparseThreads);
}
}  // namespace

cudaError_t launch_sparse24(const SparseConvParams& p, ElementType type, const void* x, const void* values,
                            const int* meta, const void* bias, void* y, cudaStream_t stream) {
    if (sparse_blocks(p) == 0) return cudaSuccess;
    if (type == kFloat16) {
        sparse24_kernel<half_t><<<sparse_blocks(p), kSparseThreads, 0, stream>>>(
            p, static_cast<const half_t*>(x), static_cast<const half_t*>(values), meta,
            static_cast<const half_t*>(bias), static_cast<half_t*>(y));
    } else {
        sparse24_kernel<float><<<sparse_blocks(p), kSparseThreads, 0, stream>>>(
            p, static_cast<const float*>(x), static_cast<const float*>(values), meta,
            static_cast<const float*>(bias), static_cast<float*>(y));
    }
    return cudaGetLastError();
}

cudaError_t launch_sparse_csr(const SparseConvParams& p, ElementType type, const void* x, const void* values,
                              const int* col, const int* row_ptr, const void* bias, void* y, cudaStream_t stream) {
    if (sparse_blocks(p) == 0) return cudaSuccess;
    if (type == kFloat16) {
        sparse_csr_kernel<half_t><<<sparse_blocks(p), kSparseThreads, 0, stream>>>(
            p, static_cast<const half_t*>(x), static_cast<const half_t*>(values), col, row_ptr,
            static_cast<const half_t*>(bias), static_cast<half_t*>(y));
    } else {
        sparse_csr_kernel<float><<<sparse_blocks(p), kSparseThreads, 0, stream>>>(
            p, static_cast<const float*>(x), static_cast<const float*>(values), col, row_ptr,
            static_cast<const float*>(bias), static_cast<float*>(y));
    }
    return cudaGetLastError();
}

}  // namespace esq
#endif
