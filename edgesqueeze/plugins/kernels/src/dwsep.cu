// Fused depthwise-separable convolution kernels (instantiations) and their host launcher.
// The kernel part compiles with nvcc and with NVRTC (edgesqueeze plugins check); the launcher only with nvcc.
#include "esq/dwsep.cuh"

namespace esq {

template __global__ void dwsep_tiled_kernel<float>(DwsepParams, const float*, const float*, const float*,
                                                   const float*, const float*, float*);
template __global__ void dwsep_tiled_kernel<half_t>(DwsepParams, const half_t*, const half_t*, const half_t*,
                                                    const half_t*, const half_t*, half_t*);
template __global__ void dwsep_fast_kernel<float>(DwsepParams, const float*, const float*, const float*,
                                                  const float*, const float*, float*);
template __global__ void dwsep_fast_kernel<half_t>(DwsepParams, const half_t*, const half_t*, const half_t*,
                                                   const half_t*, const half_t*, half_t*);
template __global__ void dwsep_fast_int8_kernel<signed char>(DwsepParams, DwsepQuant, const signed char*, const float*,
                                                             const float*, const signed char*, const float*,
                                                             const float*, signed char*);
template __global__ void dwsep_quantize_weights_kernel<signed char>(DwsepParams, const float*, signed char*, float*);
template __global__ void dwsep_reference_kernel<float>(DwsepParams, const float*, const float*, const float*,
                                                       const float*, const float*, float*);
template __global__ void dwsep_reference_kernel<half_t>(DwsepParams, const half_t*, const half_t*, const half_t*,
                                                        const half_t*, const half_t*, half_t*);

}  // namespace esq

#ifndef __CUDACC_RTC__
#include "esq/launch.h"

namespace esq {

namespace {
// The largest dynamic shared memory a block may use on the current device (opt-in limit on sm_70+).
int max_block_smem() {
    int dev = 0, optin = 0, plain = 48 * 1024;
    if (cudaGetDevice(&dev) != cudaSuccess) return plain;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess || optin < plain)
        return plain;
    return optin;
}

// Allow `kernel` `bytes` of dynamic shared memory; false when the device cannot.
template <typename K>
bool reserve_smem(K kernel, int bytes) {
    if (bytes > max_block_smem()) return false;
    if (bytes <= 48 * 1024) return true;
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) == cudaSuccess;
}

template <typename T>
cudaError_t launch_dwsep_typed(const DwsepParams& p, const void* x, const void* w_dw, const void* b_dw,
                               const void* w_pw, const void* b_pw, void* y, cudaStream_t stream, DwsepKernel which) {
    const long long outputs = (long long)p.N * p.M * p.OH * p.OW;
    if (outputs == 0) return cudaSuccess;
    const T* tx = static_cast<const T*>(x);
    const T* twd = static_cast<const T*>(w_dw);
    const T* tbd = static_cast<const T*>(b_dw);
    const T* twp = static_cast<const T*>(w_pw);
    const T* tbp = static_cast<const T*>(b_pw);
    T* ty = static_cast<T*>(y);
    const int smem = dwsep_fast_smem_bytes(p, (int)sizeof(T));
    if (which == kDwsepFast && !reserve_smem(dwsep_fast_kernel<T>, smem)) which = kDwsepChunked;
    if (which == kDwsepFast) {
        dwsep_fast_kernel<T><<<(unsigned int)dwsep_fast_tiles(p), kFastThreads, smem, stream>>>(p, tx, twd, tbd, twp,
                                                                                                 tbp, ty);
    } else if (which == kDwsepChunked) {
        dim3 grid((unsigned int)dwsep_tiles_p(p), (unsigned int)dwsep_tiles_m(p));
        dwsep_tiled_kernel<T><<<grid, kDwsepThreads, 0, stream>>>(p, tx, twd, tbd, twp, tbp, ty);
    } else {
        const int threads = 256;
        dwsep_reference_kernel<T><<<(unsigned int)((outputs + threads - 1) / threads), threads, 0, stream>>>(
            p, tx, twd, tbd, twp, tbp, ty);
    }
    return cudaGetLastError();
}
}  // namespace

cudaError_t launch_dwsep(const DwsepParams& p, ElementType type, const void* x, const void* w_dw, const void* b_dw,
                         const void* w_pw, const void* b_pw, void* y, cudaStream_t stream, DwsepKernel which) {
    if (type == kFloat16) return launch_dwsep_typed<half_t>(p, x, w_dw, b_dw, w_pw, b_pw, y, stream, which);
    return launch_dwsep_typed<float>(p, x, w_dw, b_dw, w_pw, b_pw, y, stream, which);
}

cudaError_t launch_dwsep_int8(const DwsepParams& p, DwsepQuant q, const void* x, const float* w_dw, const float* b_dw,
                              const float* w_pw, const float* b_pw, void* y, void* workspace, cudaStream_t stream) {
    if ((long long)p.N * p.M * p.OH * p.OW == 0) return cudaSuccess;
    const int smem = dwsep_fast_smem_bytes(p, 1);
    if (!reserve_smem(dwsep_fast_int8_kernel<signed char>, smem)) return cudaErrorInvalidConfiguration;
    signed char* wq = static_cast<signed char*>(workspace);
    float* w_scale = reinterpret_cast<float*>(wq + round_up(p.M * dwsep_fast_cpad(p), 16));
    dwsep_quantize_weights_kernel<signed char><<<(unsigned int)ceil_div(p.M, 128), 128, 0, stream>>>(p, w_pw, wq, w_scale);
    dwsep_fast_int8_kernel<signed char><<<(unsigned int)dwsep_fast_tiles(p), kFastThreads, smem, stream>>>(
        p, q, static_cast<const signed char*>(x), w_dw, b_dw, wq, w_scale, b_pw, static_cast<signed char*>(y));
    return cudaGetLastError();
}

}  // namespace esq
#endif
