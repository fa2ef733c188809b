// Tiled sparse kernels (included by sparse.cuh): CSR and 2:4 weights, FP32 and FP16 X, FP32 accumulation.
//
// For pre-Ampere boards (TX2 sm_62, Xavier sm_72, Nano sm_53) and high unstructured sparsity; on sm_80+ the 2:4
// layers go to TensorRT's own sparse tensor cores instead (docs/kernels.md, "SparseConv: which path runs").
//
// One block (kSpThreads = 256 threads, 8 warps) owns kSpTP = 256 output pixels (q over N*OH*OW) and kSpRows = 32
// output channels (4 per warp). For each chunk of kSpRC = 32 reduction indices r0 .. r0+31:
//   stage (every thread, its own pixel): the im2col slice s_x[rl][pixel] = X value that r0 + rl multiplies for
//          that pixel, 0 in the padding (32 KiB FP32, 16 KiB FP16). The thread's (n, ih0, iw0)
//          are computed once per block; (c, ky, kx) once per chunk and then incremented: no division per element.
//   __syncthreads();
//   accumulate (each warp, its 4 rows; each lane 8 consecutive pixels): for every non-zero (w, r) of the row with
//          r in the chunk, 8 FFMA with one 8-pixel read of s_x[r - r0] (2 LDS.128 FP32, 1 LDS.128 FP16). CSR keeps a
//          cursor per row (col ascending within a row, as compress_csr writes it); 2:4 reads the chunk's metadata
//          word r0 / 32 and its 16 values (8 pairs) directly.
//   __syncthreads();
// then bias + activation + store. Each staged X value serves every non-zero of 32 rows at that r; each weight is
// read once per warp (a broadcast) and used for 8 pixels.
#ifndef ESQ_SPARSE_FAST_CUH
#define ESQ_SPARSE_FAST_CUH

namespace esq {

enum {
    kSpTP = 256,
    kSpRC = 32,
    kSpThreads = 256,  // one staging thread per pixel
    kSpRowsPerWarp = 4,
    kSpRows = (kSpThreads / 32) * kSpRowsPerWarp,
    kSpPix = kSpTP / 32,  // pixels per lane
    kSpAcc = kSpRowsPerWarp * kSpPix
};

ESQ_HD long long sparse_fast_tiles_p(const SparseConvParams& p) {
    return ((long long)p.N * p.OH * p.OW + kSpTP - 1) / kSpTP;
}
ESQ_HD int sparse_fast_tiles_m(const SparseConvParams& p) { return ceil_div(p.M, kSpRows); }
ESQ_HD int sparse_fast_chunks(const SparseConvParams& p) { return ceil_div(sparse_reduction_size(p), kSpRC); }

// ---- stage: thread `tid` writes the 32 X values of its pixel for reduction indices r0 .. r0+31 ---------------------
template <typename T>
ESQ_HD void sparse_fast_stage(const SparseConvParams& p, const T* x, long long tile, int r0, int tid, T* s_x) {
    const long long q = tile * kSpTP + tid;
    const long long plane = (long long)p.OH * p.OW;
    const bool inside = q < (long long)p.N * plane;
    const int n = inside ? (int)(q / plane) : 0;
    const int ih0 = inside ? (int)((q % plane) / p.OW) * p.SH - p.PT : 0;
    const int iw0 = inside ? (int)(q % p.OW) * p.SW - p.PL : 0;
    const int R = sparse_reduction_size(p);
    const int tap = r0 / p.C;
    int c = r0 - tap * p.C, ky = tap / p.KW, kx = tap - ky * p.KW;
    for (int rl = 0; rl < kSpRC; ++rl) {
        const int ih = ih0 + ky * p.DH, iw = iw0 + kx * p.DW;
        T v = from_float<T>(0.f);
        if (inside && r0 + rl < R && ih >= 0 && ih < p.H && iw >= 0 && iw < p.W)
            v = x[(((long long)n * p.C + c) * p.H + ih) * p.W + iw];
        s_x[rl * kSpTP + tid] = v;
        if (++c == p.C) {  // next kernel tap
            c = 0;
            if (++kx == p.KW) kx = 0, ++ky;
        }
    }
}

// 8 consecutive staged values as float: 2 LDS.128 (FP32) or 1 LDS.128 + 4 half2 -> float2 (FP16).
ESQ_HD void sparse_fast_lds8(const float* s, float* out) {
    const F4 a = lds4(s), b = lds4(s + 4);
    ESQ_UNROLL
    for (int j = 0; j < 4; ++j) out[j] = a.v[j], out[4 + j] = b.v[j];
}
ESQ_HD void sparse_fast_lds8(const half_t* s, float* out) {
#if defined(__CUDA_ARCH__)
    const float4 raw = *reinterpret_cast<const float4*>(s);
    const half2_t* h = reinterpret_cast<const half2_t*>(&raw);
    ESQ_UNROLL
    for (int j = 0; j < 4; ++j) {
        const float2 f = __half22float2(h[j]);
        out[2 * j] = f.x, out[2 * j + 1] = f.y;
    }
#else
    for (int j = 0; j < 8; ++j) out[j] = to_float(s[j]);
#endif
}

// acc[i * 8 + j] += w * s_x[rl][lane * 8 + j] for row slot i.
template <typename T>
ESQ_HD void sparse_fast_fma(const T* s_x, int rl, int lane, float w, float* acc_row) {
    float xv[kSpPix];
    sparse_fast_lds8(s_x + rl * kSpTP + lane * kSpPix, xv);
    ESQ_UNROLL
    for (int j = 0; j < kSpPix; ++j) acc_row[j] += w * xv[j];
}

// ---- accumulate: warp tid / 32 adds chunk r0's non-zeros of its 4 rows; `cursor` holds each row's next k ----------
ESQ_HD int sparse_fast_row(int tile_m, int tid, int i) { return tile_m * kSpRows + (tid / 32) * kSpRowsPerWarp + i; }

template <typename T>
ESQ_HD void sparse_fast_csr_accumulate(const SparseConvParams& p, const T* values, const int* col, const int* row_ptr,
                                       const T* s_x, int tile_m, int r0, int tid, int* cursor, float* acc) {
    const int lane = tid % 32;
    ESQ_UNROLL  // unrolled: acc and cursor stay in registers
    for (int i = 0; i < kSpRowsPerWarp; ++i) {
        const int m = sparse_fast_row(tile_m, tid, i);
        const int end = m < p.M ? row_ptr[m + 1] : 0;
        int k = cursor[i];
        for (; k < end; ++k) {
            const int r = col[k];
            const float w = to_float(values[k]);  // in bounds for k < end: loaded with col, not after the test
            if ((unsigned int)(r - r0) >= (unsigned int)kSpRC) {  // one compare on the common path
                if (r >= r0) break;                                // the next chunk's
                continue;  // behind the cursor (a row out of order): skipped, never read outside s_x
            }
            sparse_fast_fma(s_x, r - r0, lane, w, acc + i * kSpPix);
        }
        cursor[i] = k;
    }
}

// 2:4: the chunk is metadata word r0 / 32 of the row (8 groups) and values r0 / 2 .. +15.
template <typename T>
ESQ_HD void sparse_fast_24_accumulate(const SparseConvParams& p, const T* values, const int* meta, const T* s_x,
                                      int tile_m, int r0, int tid, float* acc) {
    const int lane = tid % 32;
    const int R = sparse_reduction_size(p);
    const int groups = (R - r0) / 4 < kSpRC / 4 ? (R - r0) / 4 : kSpRC / 4;
    ESQ_UNROLL
    for (int i = 0; i < kSpRowsPerWarp; ++i) {
        const int m = sparse_fast_row(tile_m, tid, i);
        if (m >= p.M) continue;
        const unsigned int word = (unsigned int)meta[(long long)m * sparse24_meta_words(p) + r0 / kSpRC];
        const T* v = values + (long long)m * (R / 2) + r0 / 2;
        ESQ_UNROLL
        for (int g = 0; g < kSpRC / 4; ++g) {
            if (g >= groups) break;
            const unsigned int bits = (word >> (4 * g)) & 0xfu;
            float v0, v1;
            load_pair_as_float2(v + 2 * g, v0, v1);
            sparse_fast_fma(s_x, 4 * g + (int)(bits & 3u), lane, v0, acc + i * kSpPix);
            sparse_fast_fma(s_x, 4 * g + (int)(bits >> 2), lane, v1, acc + i * kSpPix);
        }
    }
}

// ---- store: bias, activation, 8 consecutive pixels of each of the warp's 4 rows -----------------------------------
template <typename T>
ESQ_HD void sparse_fast_store(const SparseConvParams& p, const T* bias, long long tile, int tile_m, int tid,
                              const float* acc, T* y) {
    const long long plane = (long long)p.OH * p.OW;
    ESQ_UNROLL
    for (int i = 0; i < kSpRowsPerWarp; ++i) {
        const int m = sparse_fast_row(tile_m, tid, i);
        if (m >= p.M) continue;
        const float b = to_float(bias[m]);
        ESQ_UNROLL
        for (int j = 0; j < kSpPix; ++j) {
            const long long q = tile * kSpTP + (tid % 32) * kSpPix + j;
            if (q >= (long long)p.N * plane) continue;
            const float v = apply_activation(p.act, acc[i * kSpPix + j] + b, p.alpha, p.beta);
            y[((q / plane) * p.M + m) * plane + q % plane] = from_float<T>(v);
        }
    }
}

// CSR row cursors of thread `tid` at the start: row_ptr[m] of its 4 rows.
ESQ_HD void sparse_fast_csr_cursors(const SparseConvParams& p, const int* row_ptr, int tile_m, int tid, int* cursor) {
    ESQ_UNROLL
    for (int i = 0; i < kSpRowsPerWarp; ++i) {
        const int m = sparse_fast_row(tile_m, tid, i);
        cursor[i] = m < p.M ? row_ptr[m] : 0;
    }
}

#if ESQ_DEVICE_COMPILE
// grid (sparse_fast_tiles_p, sparse_fast_tiles_m), kSpThreads threads, static shared memory kSpRC * kSpTP * sizeof(T).
template <typename T>
__global__ void __launch_bounds__(kSpThreads, 2)
sparse_csr_fast_kernel(SparseConvParams p, const T* __restrict__ x, const T* __restrict__ values,
                       const int* __restrict__ col, const int* __restrict__ row_ptr, const T* __restrict__ bias,
                       T* __restrict__ y) {
    __shared__ float4 s_raw[kSpRC * kSpTP * sizeof(T) / 16];  // raw storage: __half has constructors
    T* s_x = reinterpret_cast<T*>(s_raw);
    float acc[kSpAcc];
    int cursor[kSpRowsPerWarp];
    ESQ_UNROLL
    for (int k = 0; k < kSpAcc; ++k) acc[k] = 0.f;
    sparse_fast_csr_cursors(p, row_ptr, blockIdx.y, threadIdx.x, cursor);
    for (int r0 = 0; r0 < sparse_reduction_size(p); r0 += kSpRC) {
        __syncthreads();
        sparse_fast_stage(p, x, blockIdx.x, r0, threadIdx.x, s_x);
        __syncthreads();
        sparse_fast_csr_accumulate(p, values, col, row_ptr, s_x, blockIdx.y, r0, threadIdx.x, cursor, acc);
    }
    sparse_fast_store(p, bias, blockIdx.x, blockIdx.y, threadIdx.x, acc, y);
}

template <typename T>
__global__ void __launch_bounds__(kSpThreads, 2)
sparse24_fast_kernel(SparseConvParams p, const T* __restrict__ x, const T* __restrict__ values,
                     const int* __restrict__ meta, const T* __restrict__ bias, T* __restrict__ y) {
    __shared__ float4 s_raw[kSpRC * kSpTP * sizeof(T) / 16];  // raw storage: __half has constructors
    T* s_x = reinterpret_cast<T*>(s_raw);
    float acc[kSpAcc];
    ESQ_UNROLL
    for (int k = 0; k < kSpAcc; ++k) acc[k] = 0.f;
    for (int r0 = 0; r0 < sparse_reduction_size(p); r0 += kSpRC) {
        __syncthreads();
        sparse_fast_stage(p, x, blockIdx.x, r0, threadIdx.x, s_x);
        __syncthreads();
        sparse_fast_24_accumulate(p, values, meta, s_x, blockIdx.y, r0, threadIdx.x, acc);
    }
    sparse_fast_store(p, bias, blockIdx.x, blockIdx.y, threadIdx.x, acc, y);
}
#endif

}  // namespace esq

#endif  // ESQ_SPARSE_FAST_CUH
