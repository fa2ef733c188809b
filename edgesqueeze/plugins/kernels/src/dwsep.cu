// Fused depthwise-separable convolution kernels (instantiations) and their host launcher.
// The kernel part compiles with nvcc and with NVRTC (edgesqueeze plugins check); the launcher only with nvcc.
#include "esq/dwsep.cuh"

namespace esq {

template __global__ void dwsep_tiled_kernel<float>(DwsepParams, const float*, const float*, const float*,
                                                   const float*, const float*, float*);
template __global__ void dwsep_tiled_kernel<half_t>(DwsepParams, const half_t*, const half_t*, const half_t*,
                                                    const half_t*, const half_t*, half_t*);
template __global__ void dwsep_reference_kernel<float>(DwsepParams, const float*, const float*, const float*,
                                                       const float*, const float*, float*);
template __global__ void dwsep_reference_kernel<half_t>(DwsepParams, const half_t*, const half_t*, const half_t*,
                                                        const half_t*, const half_t*, half_t*);

}  // namespace esq

#ifndef __CUDACC_RTC__
#include "esq/launch.h"

namespace esq {

namespace {
template <typename T>
cudaError_t launch_dwsep_typed(const DwsepParams& p, const void* x, const void* w_dw, const void* b_dw,
                               const void* w_pw, const void* b_pw, void* y, cudaStream_t stream, bool tiled) {
    const long long outputs = (long long)p.N * p.M * p.OH * p.OW;
    if (outputs == 0) return cudaSuccess;
    if (tiled) {
        dim3 grid((unsigned int)dwsep_tiles_p(p), (unsigned int)dwsep_tiles_m(p));
        dwsep_tiled_kernel<T><<<grid, kDwsepThreads, 0, stream>>>(
            p, static_cast<const T*>(x), static_cast<const T*>(w_dw), static_cast<const T*>(b_dw),
            static_cast<const T*>(w_pw), static_cast<const T*>(b_pw), static_cast<T*>(y));
    } else {
        const int threads = 256;
        dwsep_reference_kernel<T><<<(unsigned int)((outputs + threads - 1) / threads), threads, 0, stream>>>(
            p, static_cast<const T*>(x), static_cast<const T*>(w_dw), static_cast<const T*>(b_dw),
            static_cast<const T*>(w_pw), static_cast<const T*>(b_pw), static_cast<T*>(y));
    }
    return cudaGetLastError();
}
}  // namespace

cudaError_t launch_dwsep(const DwsepParams& p, ElementType type, const void* x, const void* w_dw, const void* b_dw,
                         const void* w_pw, const void* b_pw, void* y, cudaStream_t stream, bool tiled) {
    if (type == kFloat16) return launch_dwsep_typed<half_t>(p, x, w_dw, b_dw, w_pw, b_pw, y, stream, tiled);
    return launch_dwsep_typed<float>(p, x, w_dw, b_dw, w_pw, b_pw, y, stream, tiled);
}

}  // namespace esq
#endif
