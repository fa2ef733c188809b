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
template __global__ void sparse24_fast_kernel<float>(SparseConvParams, const float*, const float*, const int*,
                                                     const float*, float*);
template __global__ void sparse24_fast_kernel<half_t>(SparseConvParams, const half_t*, const half_t*, const int*,
                                                      const half_t*, half_t*);
template __global__ void sparse_csr_fast_kernel<float>(SparseConvParams, const float*, const float*, const int*,
                                                       const int*, const float*, float*);
template __global__ void sparse_csr_fast_kernel<half_t>(SparseConvParams, const half_t*, const half_t*, const int*,
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

dim3 sparse_fast_grid(const SparseConvParams& p) {
    return dim3((unsigned int)sparse_fast_tiles_p(p), (unsigned int)sparse_fast_tiles_m(p));
}

template <typename T>
void sparse24_launch(const SparseConvParams& p, SparseKernel which, const void* x, const void* values,
                     const int* meta, const void* bias, void* y, cudaStream_t stream) {
    const T* xt = static_cast<const T*>(x);
    const T* vt = static_cast<const T*>(values);
    const T* bt = static_cast<const T*>(bias);
    if (which == kSparseTiled)
        sparse24_fast_kernel<T><<<sparse_fast_grid(p), kSpThreads, 0, stream>>>(p, xt, vt, meta, bt,
                                                                                static_cast<T*>(y));
    else
        sparse24_kernel<T><<<sparse_blocks(p), kSparseThreads, 0, stream>>>(p, xt, vt, meta, bt, static_cast<T*>(y));
}

template <typename T>
void sparse_csr_launch(const SparseConvParams& p, SparseKernel which, const void* x, const void* values,
                       const int* col, const int* row_ptr, const void* bias, void* y, cudaStream_t stream) {
    const T* xt = static_cast<const T*>(x);
    const T* vt = static_cast<const T*>(values);
    const T* bt = static_cast<const T*>(bias);
    if (which == kSparseTiled)
        sparse_csr_fast_kernel<T><<<sparse_fast_grid(p), kSpThreads, 0, stream>>>(p, xt, vt, col, row_ptr, bt,
                                                                                  static_cast<T*>(y));
    else
        sparse_csr_kernel<T><<<sparse_blocks(p), kSparseThreads, 0, stream>>>(p, xt, vt, col, row_ptr, bt,
                                                                             static_cast<T*>(y));
}
}  // namespace

cudaError_t launch_sparse24(const SparseConvParams& p, ElementType type, const void* x, const void* values,
                            const int* meta, const void* bias, void* y, cudaStream_t stream, SparseKernel which) {
    if (sparse_blocks(p) == 0) return cudaSuccess;
    if (type == kFloat16)
        sparse24_launch<half_t>(p, which, x, values, meta, bias, y, stream);
    else
        sparse24_launch<float>(p, which, x, values, meta, bias, y, stream);
    return cudaGetLastError();
}

cudaError_t launch_sparse_csr(const SparseConvParams& p, ElementType type, const void* x, const void* values,
                              const int* col, const int* row_ptr, const void* bias, void* y, cudaStream_t stream,
                              SparseKernel which) {
    if (sparse_blocks(p) == 0) return cudaSuccess;
    if (type == kFloat16)
        sparse_csr_launch<half_t>(p, which, x, values, col, row_ptr, bias, y, stream);
    else
        sparse_csr_launch<float>(p, which, x, values, col, row_ptr, bias, y, stream);
    return cudaGetLastError();
}

}  // namespace esq
#endif
