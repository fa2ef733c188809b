// Host launchers of the edgesqueeze kernels (what the TensorRT plugins call from enqueue()).
// Include from host C++ code; needs only the CUDA runtime API header, not the kernels.
#ifndef ESQ_LAUNCH_H
#define ESQ_LAUNCH_H

#include <cuda_runtime_api.h>

#include "dwsep.cuh"
#include "sparse.cuh"

namespace esq {

enum ElementType { kFloat32 = 0, kFloat16 = 1 };

// Which fused depthwise-separable kernel: the fast one (dwsep_fast.cuh; falls back to the chunked one when its
// shared memory exceeds the device's limit), the chunked one (dwsep.cuh), or the one-thread-per-output reference.
enum DwsepKernel { kDwsepReference = 0, kDwsepFast = 1, kDwsepChunked = 2 };

// Fused depthwise-separable convolution, FP32 or FP16.
cudaError_t launch_dwsep(const DwsepParams& p, ElementType type, const void* x, const void* w_dw, const void* b_dw,
                         const void* w_pw, const void* b_pw, void* y, cudaStream_t stream,
                         DwsepKernel which = kDwsepFast);

// INT8 X and Y (per-tensor scales in `q`), FP32 weights and biases; `workspace` holds
// dwsep_int8_workspace_bytes(p) bytes (the quantised pointwise weights). cudaErrorInvalidConfiguration when the
// depthwise tile (about 36 bytes per input channel) exceeds the device's shared memory per block.
cudaError_t launch_dwsep_int8(const DwsepParams& p, DwsepQuant q, const void* x, const float* w_dw, const float* b_dw,
                              const float* w_pw, const float* b_pw, void* y, void* workspace, cudaStream_t stream);

// Which sparse kernel: the tiled one (sparse_fast.cuh, the default) or the one-thread-per-output reference.
enum SparseKernel { kSparseReference = 0, kSparseTiled = 1 };

// 2:4 structured-sparse convolution / GEMM (values [M, R/2], metadata int32 [M, ceil(R/32)]).
cudaError_t launch_sparse24(const SparseConvParams& p, ElementType type, const void* x, const void* values,
                            const int* meta, const void* bias, void* y, cudaStream_t stream,
                            SparseKernel which = kSparseTiled);

// CSR sparse convolution / GEMM (values [nnz], col int32 [nnz] ascending within each row, row_ptr int32 [M+1]).
cudaError_t launch_sparse_csr(const SparseConvParams& p, ElementType type, const void* x, const void* values,
                              const int* col, const int* row_ptr, const void* bias, void* y, cudaStream_t stream,
                              SparseKernel which = kSparseTiled);

}  // namespace esq

#endif  // ESQ_LAUNCH_H
