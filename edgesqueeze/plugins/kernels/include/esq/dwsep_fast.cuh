// Fast fused depthwise-separable kernels (included by dwsep.cuh): FP32, FP16 (half2) and INT8 (dp4a).
//
// One block owns kFastTP = 32 output pixels (q over N*OH*OW) and every output channel:
//   stage 1 (once per block): the depthwise values of ALL C channels for its 32 pixels go to shared memory
//            (s_dw, [Cpad][32], Cpad = C rounded up to kFastTC). Each depthwise value is computed exactly once.
//   stage 2, for each tile of kFastTM = 64 output channels, for each chunk of kFastTC = 32 input channels:
//            the 32 x 64 pointwise-weight slice is staged in s_w ([c][m], transposed); __syncthreads();
//            each of the 128 threads accumulates a 4 x 4 micro-tile (4 channels x 4 consecutive pixels) from
//            one 128-bit load of 4 weights and one 128-bit load of 4 depthwise values per channel:
//            FP32 16 FFMA per 2 LDS.128; FP16 8 HFMA2 per LDS.128 + LDS.64; INT8 16 IDP4A (64 MACs) per 2 LDS.128.
//   stage 3: bias + activation, each thread writes 4 consecutive pixels of 4 channels.
// Thread t: tm = t / 8 (channels tm*4 .. +3 of the tile), tp = t % 8 (pixels tp*4 .. +3). A warp reads 8 distinct
// 16-byte depthwise vectors (conflict-free) and 4 distinct weight vectors (broadcast).
//
// Shared memory grows with C (FP32: 128*Cpad + 8 KiB, FP16 half that + 8 KiB, INT8 36*Cpad + 2 KiB); the launcher
// falls back to the chunked kernel of dwsep.cuh (which recomputes the depthwise values per 32-channel output tile)
// when it exceeds the device's per-block limit (48 KiB on sm_53/62, 96 KiB on sm_72, 163 KiB on sm_87).
//
// FP16: the depthwise values are rounded to binary16 in s_dw; the pointwise products are summed with HFMA2 in
// binary16 over one 32-channel chunk, then added to FP32 accumulators (so long reductions keep FP32 accuracy).
// INT8: X is INT8 with a per-tensor scale, the depthwise value is computed in FP32 and requantised per (pixel,
// 32-channel chunk) with a dynamic scale (max |D| / 127), the pointwise weights per output channel (max |W| / 127,
// computed by dwsep_quantize_weights_kernel into the workspace); int32 accumulation per chunk, FP32 across chunks,
// the output requantised with Y's per-tensor scale. No calibration of the intermediate is needed.
#ifndef ESQ_DWSEP_FAST_CUH
#define ESQ_DWSEP_FAST_CUH

namespace esq {

enum {
    kFastTP = 32,
    kFastTM = 64,
    kFastTC = 32,
    kFastThreads = 128,  // (kFastTM / 4) x (kFastTP / 4)
    kFastColumns = kFastTP / 4
};

// Per-tensor scales of the INT8 path (TensorRT's PluginTensorDesc::scale of X and Y).
struct DwsepQuant {
    float x_scale, y_scale;
};

ESQ_HD int dwsep_fast_cpad(const DwsepParams& p) { return round_up(p.C, kFastTC); }
ESQ_HD long long dwsep_fast_tiles(const DwsepParams& p) {
    return ((long long)p.N * p.OH * p.OW + kFastTP - 1) / kFastTP;
}
// Dynamic shared memory of the fast kernels; elem = 4 (FP32), 2 (FP16), 1 (INT8).
ESQ_HD int dwsep_fast_smem_bytes(const DwsepParams& p, int elem) {
    const int cpad = dwsep_fast_cpad(p);
    if (elem == 1) return cpad * kFastTP + (cpad / kFastTC) * kFastTP * 4 + kFastTC * kFastTM;
    if (elem == 2) return cpad * kFastTP * 2 + kFastTC * kFastTM * 4;
    return cpad * kFastTP * 4 + kFastTC * kFastTM * 4;
}
// INT8 workspace: quantised pointwise weights [M][Cpad] (int8), then their scales [M] (float).
ESQ_HD long long dwsep_int8_workspace_bytes(const DwsepParams& p) {
    return (long long)round_up(p.M * dwsep_fast_cpad(p), 16) + 4LL * p.M;
}

// Pixel q of the flattened N*OH*OW output → (n, oh, ow); false past the end.
ESQ_HD bool dwsep_pixel(const DwsepParams& p, long long q, int& n, int& oh, int& ow) {
    if (q >= (long long)p.N * p.OH * p.OW) return false;
    ow = (int)(q % p.OW);
    oh = (int)((q / p.OW) % p.OH);
    n = (int)(q / ((long long)p.OW * p.OH));
    return true;
}

// ---- stage 1: depthwise values of every channel of the block's pixels ---------------------------------------
// FP32: s_dw[c * 32 + pixel] (float). FP16: s_dw2[c * 16 + pixel / 2] (half2 of two neighbouring pixels).
template <typename T>
ESQ_HD void dwsep_fast_depthwise(const DwsepParams& p, const T* x, const T* w_dw, const T* b_dw, long long tile,
                                 int tid, float* s_dw) {
    const int items = dwsep_fast_cpad(p) * kFastTP;
    for (int e = tid; e < items; e += kFastThreads) {
        const int c = e / kFastTP;
        int n, oh, ow;
        float v = 0.f;
        if (c < p.C && dwsep_pixel(p, tile * kFastTP + e % kFastTP, n, oh, ow))
            v = dwsep_depthwise_value(p, x, w_dw, b_dw, n, c, oh, ow);
        s_dw[e] = v;
    }
}

ESQ_HD void dwsep_fast_depthwise(const DwsepParams& p, const half_t* x, const half_t* w_dw, const half_t* b_dw,
                                 long long tile, int tid, half2_t* s_dw2) {
    const int items = dwsep_fast_cpad(p) * (kFastTP / 2);
    for (int e = tid; e < items; e += kFastThreads) {
        const int c = e / (kFastTP / 2);
        const long long q = tile * kFastTP + 2 * (e % (kFastTP / 2));
        int n, oh, ow;
        float v0 = 0.f, v1 = 0.f;
        if (c < p.C && dwsep_pixel(p, q, n, oh, ow)) v0 = dwsep_depthwise_value(p, x, w_dw, b_dw, n, c, oh, ow);
        if (c < p.C && dwsep_pixel(p, q + 1, n, oh, ow)) v1 = dwsep_depthwise_value(p, x, w_dw, b_dw, n, c, oh, ow);
        s_dw2[e] = make_half2_of(v0, v1);
    }
}

// INT8: work item (chunk g, pixel): the chunk's 32 depthwise values, their scale s_sd[g * 32 + pixel], and 8 words
// of 4 quantised channels each, s_dq[(g * 8 + k) * 32 + pixel].
ESQ_HD void dwsep_fast_depthwise_int8(const DwsepParams& p, const signed char* x, const float* w_dw,
                                      const float* b_dw, float x_scale, long long tile, int tid, int* s_dq,
                                      float* s_sd) {
    const int items = (dwsep_fast_cpad(p) / kFastTC) * kFastTP;
    for (int e = tid; e < items; e += kFastThreads) {
        const int g = e / kFastTP, pl = e % kFastTP;
        int n, oh, ow;
        const bool inside = dwsep_pixel(p, tile * kFastTP + pl, n, oh, ow);
        float v[kFastTC];
        float amax = 0.f;
        ESQ_UNROLL
        for (int k = 0; k < kFastTC; ++k) {
            const int c = g * kFastTC + k;
            v[k] = (inside && c < p.C) ? dwsep_depthwise_value(p, x, w_dw, b_dw, n, c, oh, ow, x_scale) : 0.f;
            const float a = v[k] < 0.f ? -v[k] : v[k];
            amax = a > amax ? a : amax;
        }
        const float scale = amax > 0.f ? amax / 127.f : 1.f;
        s_sd[e] = scale;
        ESQ_UNROLL
        for (int k = 0; k < kFastTC / 4; ++k) {
            s_dq[(g * (kFastTC / 4) + k) * kFastTP + pl] =
                pack_i8x4(quantize_rne(v[4 * k] / scale, -127, 127), quantize_rne(v[4 * k + 1] / scale, -127, 127),
                          quantize_rne(v[4 * k + 2] / scale, -127, 127), quantize_rne(v[4 * k + 3] / scale, -127, 127));
        }
    }
}

// INT8 pointwise weights of output channel m: wq[m * Cpad + c] = rne(W / sw[m]), sw[m] = max |W[m, :]| / 127.
ESQ_HD void dwsep_quantize_weight_row(const DwsepParams& p, const float* w_pw, int m, signed char* wq, float* sw) {
    const int cpad = dwsep_fast_cpad(p);
    const float* row = w_pw + (long long)m * p.C;
    float amax = 0.f;
    for (int c = 0; c < p.C; ++c) amax = row[c] > amax ? row[c] : (-row[c] > amax ? -row[c] : amax);
    const float scale = amax > 0.f ? amax / 127.f : 1.f;
    sw[m] = scale;
    for (int c = 0; c < cpad; ++c)
        wq[(long long)m * cpad + c] = (signed char)(c < p.C ? quantize_rne(row[c] / scale, -127, 127) : 0);
}

// ---- stage 2a: the 32 x 64 pointwise-weight slice, transposed to s_w[c * 64 + m] ------------------------------
template <typename T>
ESQ_HD void dwsep_fast_weights(const DwsepParams& p, const T* w_pw, int m0, int c0, int tid, float* s_w) {
    for (int e = tid; e < kFastTC * kFastTM; e += kFastThreads) {
        const int cl = e % kFastTC, ml = e / kFastTC, m = m0 + ml, c = c0 + cl;  // c fastest: coalesced reads
        s_w[cl * kFastTM + ml] = (m < p.M && c < p.C) ? to_float(w_pw[(long long)m * p.C + c]) : 0.f;
    }
}
// FP16: each weight duplicated into both halves of a half2 (multiplies two pixels at once).
ESQ_HD void dwsep_fast_weights(const DwsepParams& p, const half_t* w_pw, int m0, int c0, int tid, half2_t* s_w2) {
    for (int e = tid; e < kFastTC * kFastTM; e += kFastThreads) {
        const int cl = e % kFastTC, ml = e / kFastTC, m = m0 + ml, c = c0 + cl;
        const float v = (m < p.M && c < p.C) ? to_float(w_pw[(long long)m * p.C + c]) : 0.f;
        s_w2[cl * kFastTM + ml] = make_half2_of(v, v);
    }
}
// INT8: s_wq[k * 64 + m] = 4 quantised channels c0 + 4k .. +3 of output channel m0 + m (one aligned word of wq).
ESQ_HD void dwsep_fast_weights_int8(const DwsepParams& p, const signed char* wq, int m0, int c0, int tid, int* s_wq) {
    const int cpad = dwsep_fast_cpad(p);
    for (int e = tid; e < (kFastTC / 4) * kFastTM; e += kFastThreads) {
        const int k = e % (kFastTC / 4), ml = e / (kFastTC / 4), m = m0 + ml;
        int word = 0;
        if (m < p.M) {
            const signed char* q = wq + (long long)m * cpad + c0 + 4 * k;
            word = pack_i8x4(q[0], q[1], q[2], q[3]);
        }
        s_wq[k * kFastTM + ml] = word;
    }
}

// ---- stage 2b: the register-blocked inner loops ---------------------------------------------------------------
// acc[i * 4 + j]: output channel tm*4 + i, pixel tp*4 + j.
ESQ_HD void dwsep_fast_accumulate(int tid, int c0, const float* s_dw, const float* s_w, float* acc) {
    const int tm = tid / kFastColumns, tp = tid % kFastColumns;
    ESQ_UNROLL
    for (int cl = 0; cl < kFastTC; ++cl) {
        const F4 a = lds4(s_w + cl * kFastTM + tm * 4);
        const F4 b = lds4(s_dw + (c0 + cl) * kFastTP + tp * 4);
        ESQ_UNROLL
        for (int i = 0; i < 4; ++i) {
            ESQ_UNROLL
            for (int j = 0; j < 4; ++j) acc[i * 4 + j] += a.v[i] * b.v[j];
        }
    }
}

ESQ_HD void dwsep_fast_accumulate(int tid, int c0, const half2_t* s_dw2, const half2_t* s_w2, float* acc) {
    const int tm = tid / kFastColumns, tp = tid % kFastColumns;
    half2_t h[8];  // [i * 2 + k]: channel i, pixels 2k, 2k+1; binary16 sums over this chunk only
    ESQ_UNROLL
    for (int k = 0; k < 8; ++k) h[k] = make_half2_of(0.f, 0.f);
    ESQ_UNROLL
    for (int cl = 0; cl < kFastTC; ++cl) {
        const half2_t* wv = s_w2 + cl * kFastTM + tm * 4;        // 16 bytes: 4 duplicated weights
        const half2_t* dv = s_dw2 + (c0 + cl) * (kFastTP / 2) + tp * 2;  // 8 bytes: 4 pixels
#if defined(__CUDA_ARCH__)
        const float4 wraw = *reinterpret_cast<const float4*>(wv);
        const float2 draw = *reinterpret_cast<const float2*>(dv);
        const half2_t* w = reinterpret_cast<const half2_t*>(&wraw);
        const half2_t* d = reinterpret_cast<const half2_t*>(&draw);
#else
        const half2_t* w = wv;
        const half2_t* d = dv;
#endif
        ESQ_UNROLL
        for (int i = 0; i < 4; ++i) {
            h[i * 2] = hfma2(w[i], d[0], h[i * 2]);
            h[i * 2 + 1] = hfma2(w[i], d[1], h[i * 2 + 1]);
        }
    }
    ESQ_UNROLL
    for (int i = 0; i < 4; ++i) {
        acc[i * 4 + 0] += half2_lo(h[i * 2]);
        acc[i * 4 + 1] += half2_hi(h[i * 2]);
        acc[i * 4 + 2] += half2_lo(h[i * 2 + 1]);
        acc[i * 4 + 3] += half2_hi(h[i * 2 + 1]);
    }
}

ESQ_HD void dwsep_fast_accumulate_int8(int tid, int c0, const int* s_dq, const float* s_sd, const int* s_wq,
                                       float* acc) {
    const int tm = tid / kFastColumns, tp = tid % kFastColumns;
    int iacc[16];
    ESQ_UNROLL
    for (int k = 0; k < 16; ++k) iacc[k] = 0;
    ESQ_UNROLL
    for (int k = 0; k < kFastTC / 4; ++k) {
        const I4 a = lds4(s_wq + k * kFastTM + tm * 4);
        const I4 b = lds4(s_dq + (c0 / 4 + k) * kFastTP + tp * 4);
        ESQ_UNROLL
        for (int i = 0; i < 4; ++i) {
            ESQ_UNROLL
            for (int j = 0; j < 4; ++j) iacc[i * 4 + j] = dot4_i8(a.v[i], b.v[j], iacc[i * 4 + j]);
        }
    }
    const F4 sd = lds4(s_sd + (c0 / kFastTC) * kFastTP + tp * 4);
    ESQ_UNROLL
    for (int i = 0; i < 4; ++i) {
        ESQ_UNROLL
        for (int j = 0; j < 4; ++j) acc[i * 4 + j] += (float)iacc[i * 4 + j] * sd.v[j];
    }
}

// ---- stage 3: bias, activation, store (INT8: `w_scale` per channel and requantisation with y_scale) ----------
template <typename T>
ESQ_HD void dwsep_fast_store(const DwsepParams& p, const T* b_pw, long long tile, int m0, int tid, const float* acc,
                             T* y) {
    const long long plane = (long long)p.OH * p.OW;
    const int tm = tid / kFastColumns, tp = tid % kFastColumns;
    for (int j = 0; j < 4; ++j) {
        const long long q = tile * kFastTP + tp * 4 + j;
        if (q >= (long long)p.N * plane) return;
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + tm * 4 + i;
            if (m >= p.M) break;
            const float v = apply_activation(p.pw_act, acc[i * 4 + j] + to_float(b_pw[m]), p.pw_alpha, p.pw_beta);
            y[((q / plane) * p.M + m) * plane + q % plane] = from_float<T>(v);
        }
    }
}

ESQ_HD void dwsep_fast_store_int8(const DwsepParams& p, const float* b_pw, const float* w_scale, float y_scale,
                                  long long tile, int m0, int tid, const float* acc, signed char* y) {
    const long long plane = (long long)p.OH * p.OW;
    const int tm = tid / kFastColumns, tp = tid % kFastColumns;
    for (int j = 0; j < 4; ++j) {
        const long long q = tile * kFastTP + tp * 4 + j;
        if (q >= (long long)p.N * plane) return;
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + tm * 4 + i;
            if (m >= p.M) break;
            const float v = apply_activation(p.pw_act, acc[i * 4 + j] * w_scale[m] + b_pw[m], p.pw_alpha, p.pw_beta);
            y[((q / plane) * p.M + m) * plane + q % plane] = (signed char)quantize_rne(v / y_scale, -128, 127);
        }
    }
}

// Shared-memory element of the fast kernels: float, or half2 for FP16.
template <typename T> struct FastSmem { typedef float type; };
template <> struct FastSmem<half_t> { typedef half2_t type; };

#if ESQ_DEVICE_COMPILE
// FP32 and FP16 (half2 arithmetic): dynamic shared memory dwsep_fast_smem_bytes(p, sizeof(T)).
template <typename T>
__global__ void __launch_bounds__(kFastThreads)
dwsep_fast_kernel(DwsepParams p, const T* __restrict__ x, const T* __restrict__ w_dw, const T* __restrict__ b_dw,
                  const T* __restrict__ w_pw, const T* __restrict__ b_pw, T* __restrict__ y) {
    extern __shared__ float4 esq_smem[];
    typedef typename FastSmem<T>::type S;
    S* s_w = reinterpret_cast<S*>(esq_smem);
    S* s_dw = s_w + kFastTC * kFastTM;
    const long long tile = blockIdx.x;
    dwsep_fast_depthwise(p, x, w_dw, b_dw, tile, threadIdx.x, s_dw);
    for (int m0 = 0; m0 < p.M; m0 += kFastTM) {
        float acc[16];
        ESQ_UNROLL
        for (int k = 0; k < 16; ++k) acc[k] = 0.f;
        for (int c0 = 0; c0 < p.C; c0 += kFastTC) {
            __syncthreads();  // s_w free (and s_dw complete on the first pass)
            dwsep_fast_weights(p, w_pw, m0, c0, threadIdx.x, s_w);
            __syncthreads();
            dwsep_fast_accumulate(threadIdx.x, c0, s_dw, s_w, acc);
        }
        dwsep_fast_store(p, b_pw, tile, m0, threadIdx.x, acc, y);
    }
}

// INT8 in, INT8 out (Q = signed char; a template so that only src/dwsep.cu instantiates it); FP32 weights quantised
// beforehand by dwsep_quantize_weights_kernel.
template <typename Q>
__global__ void __launch_bounds__(kFastThreads)
dwsep_fast_int8_kernel(DwsepParams p, DwsepQuant qp, const Q* __restrict__ x, const float* __restrict__ w_dw,
                       const float* __restrict__ b_dw, const Q* __restrict__ wq, const float* __restrict__ w_scale,
                       const float* __restrict__ b_pw, Q* __restrict__ y) {
    extern __shared__ float4 esq_smem[];
    int* s_wq = reinterpret_cast<int*>(esq_smem);
    float* s_sd = reinterpret_cast<float*>(s_wq + (kFastTC / 4) * kFastTM);
    int* s_dq = reinterpret_cast<int*>(s_sd + (dwsep_fast_cpad(p) / kFastTC) * kFastTP);
    const long long tile = blockIdx.x;
    dwsep_fast_depthwise_int8(p, x, w_dw, b_dw, qp.x_scale, tile, threadIdx.x, s_dq, s_sd);
    for (int m0 = 0; m0 < p.M; m0 += kFastTM) {
        float acc[16];
        ESQ_UNROLL
        for (int k = 0; k < 16; ++k) acc[k] = 0.f;
        for (int c0 = 0; c0 < p.C; c0 += kFastTC) {
            __syncthreads();
            dwsep_fast_weights_int8(p, wq, m0, c0, threadIdx.x, s_wq);
            __syncthreads();
            dwsep_fast_accumulate_int8(threadIdx.x, c0, s_dq, s_sd, s_wq, acc);
        }
        dwsep_fast_store_int8(p, b_pw, w_scale, qp.y_scale, tile, m0, threadIdx.x, acc, y);
    }
}

template <typename Q>
__global__ void dwsep_quantize_weights_kernel(DwsepParams p, const float* __restrict__ w_pw, Q* __restrict__ wq,
                                              float* __restrict__ w_scale) {
    const int m = blockIdx.x * blockDim.x + threadIdx.x;
    if (m < p.M) dwsep_quantize_weight_row(p, w_pw, m, wq, w_scale);
}
#endif

}  // namespace esq

#endif  // ESQ_DWSEP_FAST_CUH
