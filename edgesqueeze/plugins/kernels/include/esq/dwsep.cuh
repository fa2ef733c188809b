// Fused depthwise-separable convolution (the ONNX custom op edgesqueeze::DepthwiseSeparableConv):
//
//   D[n,c,h,w] = act_dw( b_dw[c] + sum_{ky,kx} X[n,c,h*sh - pt + ky*dh, w*sw - pl + kx*dw] * W_dw[c,0,ky,kx] )
//   Y[n,m,h,w] = act_pw( b_pw[m] + sum_c W_pw[m,c,0,0] * D[n,c,h,w] )
//
// NCHW, zero padding. The depthwise output D never goes to global memory: the tiled kernel keeps
// a TC x TP slice of it in shared memory (FP32) and consumes it at once, which saves writing and
// reading N*C*OH*OW elements per layer compared with two separate convolutions.
#ifndef ESQ_DWSEP_CUH
#define ESQ_DWSEP_CUH

#include "common.cuh"

namespace esq {

struct DwsepParams {
    int N, C, H, W;       // input
    int M;                // pointwise output channels
    int OH, OW;           // output spatial size
    int KH, KW;           // depthwise kernel
    int SH, SW;           // strides
    int PT, PL;           // top/left pads (bottom/right only change OH/OW)
    int DH, DW;           // dilations
    int dw_act, pw_act;   // Activation
    float dw_alpha, dw_beta, pw_alpha, pw_beta;
};

// Tile of the fused kernel: TP output pixels x TM output channels per block, the reduction over C
// in chunks of TC channels. 256 threads; each owns TM*TP/256 = 4 outputs.
enum {
    kDwsepTP = 32,
    kDwsepTM = 32,
    kDwsepTC = 32,
    kDwsepThreads = 256,
    kDwsepOutPerThread = kDwsepTM * kDwsepTP / kDwsepThreads,
    kDwsepLoadPerThread = kDwsepTC * kDwsepTP / kDwsepThreads
};

// One depthwise output D[n,c,oh,ow] (after its bias and activation), in FP32. `x_scale` dequantises an INT8 X
// (1 for FP32/FP16, where the product is exact).
template <typename TX, typename TW>
ESQ_HD float dwsep_depthwise_value(const DwsepParams& p, const TX* x, const TW* w_dw, const TW* b_dw,
                                   int n, int c, int oh, int ow, float x_scale = 1.f) {
    const TX* xc = x + ((long long)n * p.C + c) * p.H * p.W;
    const TW* wc = w_dw + (long long)c * p.KH * p.KW;
    float acc = 0.f;
    for (int ky = 0; ky < p.KH; ++ky) {
        int ih = oh * p.SH - p.PT + ky * p.DH;
        if (ih < 0 || ih >= p.H) continue;
        for (int kx = 0; kx < p.KW; ++kx) {
            int iw = ow * p.SW - p.PL + kx * p.DW;
            if (iw < 0 || iw >= p.W) continue;
            acc += to_float(xc[ih * p.W + iw]) * to_float(wc[ky * p.KW + kx]);
        }
    }
    return apply_activation(p.dw_act, acc * x_scale + to_float(b_dw[c]), p.dw_alpha, p.dw_beta);
}

// Reference: one final output Y[n,m,oh,ow], recomputing the depthwise values it needs.
// Slow (C*KH*KW work per output); the fast kernel below is tested against it.
template <typename T>
ESQ_HD float dwsep_output_reference(const DwsepParams& p, const T* x, const T* w_dw, const T* b_dw,
                                    const T* w_pw, const T* b_pw, int n, int m, int oh, int ow) {
    float acc = 0.f;
    for (int c = 0; c < p.C; ++c) {
        acc += to_float(w_pw[(long long)m * p.C + c]) * dwsep_depthwise_value(p, x, w_dw, b_dw, n, c, oh, ow);
    }
    return apply_activation(p.pw_act, acc + to_float(b_pw[m]), p.pw_alpha, p.pw_beta);
}

// Reference kernel body: thread `index` (over N*M*OH*OW, NCHW order) writes one output.
template <typename T>
ESQ_HD void dwsep_reference_thread(const DwsepParams& p, const T* x, const T* w_dw, const T* b_dw,
                                   const T* w_pw, const T* b_pw, T* y, long long index) {
    long long total = (long long)p.N * p.M * p.OH * p.OW;
    if (index >= total) return;
    int ow = (int)(index % p.OW);
    int oh = (int)((index / p.OW) % p.OH);
    int m = (int)((index / ((long long)p.OW * p.OH)) % p.M);
    int n = (int)(index / ((long long)p.OW * p.OH * p.M));
    y[index] = from_float<T>(dwsep_output_reference(p, x, w_dw, b_dw, w_pw, b_pw, n, m, oh, ow));
}

// ---- chunked fused kernel (the fallback of dwsep_fast.cuh): three stages per block -------------------------------------------------
// Block (tile_p, tile_m) covers flattened output pixels q = tile_p*TP .. +TP (q over N*OH*OW) and
// output channels tile_m*TM .. +TM. For each chunk of TC input channels:
//   stage 1 (dwsep_tile_load): the block computes the TC x TP depthwise values into s_dw and
//            copies the TM x TC pointwise weights into s_w;            __syncthreads()
//   stage 2 (dwsep_tile_accumulate): each thread adds its 4 outputs' partial sums; __syncthreads()
// then stage 3 (dwsep_tile_store) applies bias + activation and writes Y.
// Thread t owns pixel (t % TP) and channels (t / TP) + k * (256 / TP), k = 0..3: a warp shares one
// channel (broadcast reads of s_w) and reads consecutive pixels (conflict-free reads of s_dw,
// coalesced writes of Y).

template <typename T>
ESQ_HD void dwsep_tile_load(const DwsepParams& p, const T* x, const T* w_dw, const T* b_dw, const T* w_pw,
                            int tile_p, int tile_m, int c0, int tid, float* s_dw, float* s_w) {
    const long long pixels = (long long)p.N * p.OH * p.OW;
    for (int k = 0; k < kDwsepLoadPerThread; ++k) {
        int e = tid + k * kDwsepThreads;  // element of the TC x TP slice, pixel fastest
        int pl = e % kDwsepTP;
        int cl = e / kDwsepTP;
        long long q = (long long)tile_p * kDwsepTP + pl;
        int c = c0 + cl;
        float v = 0.f;
        if (q < pixels && c < p.C) {
            int ow = (int)(q % p.OW);
            int oh = (int)((q / p.OW) % p.OH);
            int n = (int)(q / ((long long)p.OW * p.OH));
            v = dwsep_depthwise_value(p, x, w_dw, b_dw, n, c, oh, ow);
        }
        s_dw[cl * kDwsepTP + pl] = v;
    }
    // The TM x TC pointwise-weight slice, two neighbouring channels per load: with FP16 and an even C that is
    // one 32-bit half2 load (m*C + c is even, so it is aligned).
    const bool pairs = (p.C % 2) == 0;
    for (int k = 0; k < kDwsepTM * kDwsepTC / (2 * kDwsepThreads); ++k) {
        int e = tid + k * kDwsepThreads;  // pair of the slice, channel fastest
        int cl = 2 * (e % (kDwsepTC / 2));
        int ml = e / (kDwsepTC / 2);
        int m = tile_m * kDwsepTM + ml;
        int c = c0 + cl;
        float a = 0.f, b = 0.f;
        if (m < p.M) {
            const T* row = w_pw + (long long)m * p.C;
            if (pairs && c + 1 < p.C) {
                load_pair_as_float2(row + c, a, b);
            } else {
                if (c < p.C) a = to_float(row[c]);
                if (c + 1 < p.C) b = to_float(row[c + 1]);
            }
        }
        s_w[ml * kDwsepTC + cl] = a;
        s_w[ml * kDwsepTC + cl + 1] = b;
    }
}

ESQ_HD void dwsep_tile_accumulate(int tid, const float* s_dw, const float* s_w, float* acc) {
    const int pl = tid % kDwsepTP;
    ESQ_UNROLL
    for (int k = 0; k < kDwsepOutPerThread; ++k) {
        const int ml = tid / kDwsepTP + k * (kDwsepThreads / kDwsepTP);
        float a = acc[k];
        for (int cl = 0; cl < kDwsepTC; ++cl) a += s_w[ml * kDwsepTC + cl] * s_dw[cl * kDwsepTP + pl];
        acc[k] = a;
    }
}

template <typename T>
ESQ_HD void dwsep_tile_store(const DwsepParams& p, const T* b_pw, int tile_p, int tile_m, int tid,
                             const float* acc, T* y) {
    const long long plane = (long long)p.OH * p.OW;
    const long long q = (long long)tile_p * kDwsepTP + tid % kDwsepTP;
    if (q >= (long long)p.N * plane) return;
    const long long n = q / plane;
    const long long hw = q % plane;
    ESQ_UNROLL
    for (int k = 0; k < kDwsepOutPerThread; ++k) {
        int m = tile_m * kDwsepTM + tid / kDwsepTP + k * (kDwsepThreads / kDwsepTP);
        if (m >= p.M) continue;
        float v = apply_activation(p.pw_act, acc[k] + to_float(b_pw[m]), p.pw_alpha, p.pw_beta);
        y[(n * p.M + m) * plane + hw] = from_float<T>(v);
    }
}

// Grid of the tiled kernel: x = pixel tiles, y = output-channel tiles.
ESQ_HD long long dwsep_tiles_p(const DwsepParams& p) {
    return ((long long)p.N * p.OH * p.OW + kDwsepTP - 1) / kDwsepTP;
}
ESQ_HD int dwsep_tiles_m(const DwsepParams& p) { return ceil_div(p.M, kDwsepTM); }

#if ESQ_DEVICE_COMPILE
// __global__ kernels: thread mapping only.
template <typename T>
__global__ void dwsep_reference_kernel(DwsepParams p, const T* __restrict__ x, const T* __restrict__ w_dw,
                                       const T* __restrict__ b_dw, const T* __restrict__ w_pw,
                                       const T* __restrict__ b_pw, T* __restrict__ y) {
    long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    dwsep_reference_thread(p, x, w_dw, b_dw, w_pw, b_pw, y, index);
}

template <typename T>
__global__ void __launch_bounds__(kDwsepThreads)
dwsep_tiled_kernel(DwsepParams p, const T* __restrict__ x, const T* __restrict__ w_dw, const T* __restrict__ b_dw,
                   const T* __restrict__ w_pw, const T* __restrict__ b_pw, T* __restrict__ y) {
    __shared__ float s_dw[kDwsepTC * kDwsepTP];
    __shared__ float s_w[kDwsepTM * kDwsepTC];
    const int tid = threadIdx.x;
    const int tile_p = blockIdx.x;
    const int tile_m = blockIdx.y;
    float acc[kDwsepOutPerThread];
    ESQ_UNROLL
    for (int k = 0; k < kDwsepOutPerThread; ++k) acc[k] = 0.f;
    for (int c0 = 0; c0 < p.C; c0 += kDwsepTC) {
        dwsep_tile_load(p, x, w_dw, b_dw, w_pw, tile_p, tile_m, c0, tid, s_dw, s_w);
        __syncthreads();
        dwsep_tile_accumulate(tid, s_dw, s_w, acc);
        __syncthreads();
    }
    dwsep_tile_store(p, b_pw, tile_p, tile_m, tid, acc, y);
}
#endif

}  // namespace esq

#include "dwsep_fast.cuh"

#endif  // ESQ_DWSEP_CUH
