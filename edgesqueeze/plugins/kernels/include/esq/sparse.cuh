// Sparse convolution / GEMM (the ONNX custom op edgesqueeze::SparseConv) with compressed weights.
//
// The dense weight W[M,C,KH,KW] is viewed as a matrix A[M,R], R = KH*KW*C, with the reduction index
// r = (ky*KW + kx)*C + c (input channel fastest, as the implicit GEMM of an NHWC convolution), so
//   Y[n,m,oh,ow] = act( B[m] + sum_r A[m,r] * X[n, c(r), oh*sh - pt + ky(r)*dh, ow*sw - pl + kx(r)*dw] ).
// A GEMM / fully-connected layer is the case KH = KW = H = W = 1.
//
// Two compressed forms of A:
//  * 2:4 structured ("2:4"): in every group of 4 consecutive r (C % 4 == 0, so a group never spans two
//    kernel taps) at most 2 weights are non-zero. values[M, R/2] holds the 2 kept weights of each group,
//    metadata[M, ceil(R/32)] (int32 words) their 2-bit positions: group g of row m lives in word g/8,
//    bits 4*(g%8) .. +3: position of the first kept weight in bits 0-1, of the second in bits 2-3
//    (first < second). Half the weight bytes plus 1/16 of them for metadata.
//  * CSR ("csr") for highly pruned layers: values[nnz], col[nnz] (int32 r), row_ptr[M+1] (int32).
#ifndef ESQ_SPARSE_CUH
#define ESQ_SPARSE_CUH

#include "common.cuh"

namespace esq {

struct SparseConvParams {
    int N, C, H, W;
    int M;
    int OH, OW;
    int KH, KW;
    int SH, SW;
    int PT, PL;
    int DH, DW;
    int act;
    float alpha, beta;
};

ESQ_HD int sparse_reduction_size(const SparseConvParams& p) { return p.KH * p.KW * p.C; }
ESQ_HD int sparse24_meta_words(const SparseConvParams& p) { return ceil_div(sparse_reduction_size(p) / 4, 8); }

// X value that reduction index r multiplies for output pixel (n, oh, ow); 0 in the padding.
template <typename T>
ESQ_HD float sparse_input_value(const SparseConvParams& p, const T* x, int n, int r, int oh, int ow) {
    int c = r % p.C;
    int tap = r / p.C;
    int ih = oh * p.SH - p.PT + (tap / p.KW) * p.DH;
    int iw = ow * p.SW - p.PL + (tap % p.KW) * p.DW;
    if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) return 0.f;
    return to_float(x[(((long long)n * p.C + c) * p.H + ih) * p.W + iw]);
}

// One output of the 2:4 form. The two kept weights of a group are adjacent: one half2 load in FP16.
template <typename T>
ESQ_HD float sparse24_output(const SparseConvParams& p, const T* x, const T* values, const int* meta,
                             const T* bias, int n, int m, int oh, int ow) {
    const int R = sparse_reduction_size(p);
    const int groups = R / 4;
    const T* vrow = values + (long long)m * (R / 2);
    const int* mrow = meta + (long long)m * sparse24_meta_words(p);
    float acc = 0.f;
    for (int g = 0; g < groups; ++g) {
        unsigned int bits = ((unsigned int)mrow[g >> 3] >> (4 * (g & 7))) & 0xfu;
        float v0, v1;
        load_pair_as_float2(vrow + 2 * g, v0, v1);
        acc += v0 * sparse_input_value(p, x, n, 4 * g + (int)(bits & 3u), oh, ow);
        acc += v1 * sparse_input_value(p, x, n, 4 * g + (int)(bits >> 2), oh, ow);
    }
    return apply_activation(p.act, acc + to_float(bias[m]), p.alpha, p.beta);
}

// One output of the CSR form.
template <typename T>
ESQ_HD float sparse_csr_output(const SparseConvParams& p, const T* x, const T* values, const int* col,
                               const int* row_ptr, const T* bias, int n, int m, int oh, int ow) {
    float acc = 0.f;
    for (int k = row_ptr[m]; k < row_ptr[m + 1]; ++k) {
        acc += to_float(values[k]) * sparse_input_value(p, x, n, col[k], oh, ow);
    }
    return apply_activation(p.act, acc + to_float(bias[m]), p.alpha, p.beta);
}

// Thread `index` over N*M*OH*OW in NCHW order: neighbouring threads share m (broadcast weight reads)
// and read neighbouring pixels (coalesced X reads and Y writes).
ESQ_HD bool sparse_thread_coords(const SparseConvParams& p, long long index, int& n, int& m, int& oh, int& ow) {
    if (index >= (long long)p.N * p.M * p.OH * p.OW) return false;
    ow = (int)(index % p.OW);
    oh = (int)((index / p.OW) % p.OH);
    m = (int)((index / ((long long)p.OW * p.OH)) % p.M);
    n = (int)(index / ((long long)p.OW * p.OH * p.M));
    return true;
}

template <typename T>
ESQ_HD void sparse24_thread(const SparseConvParams& p, const T* x, const T* values, const int* meta, const T* bias,
                            T* y, long long index) {
    int n, m, oh, ow;
    if (!sparse_thread_coords(p, index, n, m, oh, ow)) return;
    y[index] = from_float<T>(sparse24_output(p, x, values, meta, bias, n, m, oh, ow));
}

template <typename T>
ESQ_HD void sparse_csr_thread(const SparseConvParams& p, const T* x, const T* values, const int* col,
                              const int* row_ptr, const T* bias, T* y, long long index) {
    int n, m, oh, ow;
    if (!sparse_thread_coords(p, index, n, m, oh, ow)) return;
    y[index] = from_float<T>(sparse_csr_output(p, x, values, col, row_ptr, bias, n, m, oh, ow));
}

#if ESQ_DEVICE_COMPILE
// The one-thread-per-output kernels: the reference the tiled kernels (sparse_fast.cuh) are tested against.
template <typename T>
__global__ void sparse24_kernel(SparseConvParams p, const T* __restrict__ x, const T* __restrict__ values,
                                const int* __restrict__ meta, const T* __restrict__ bias, T* __restrict__ y) {
    sparse24_thread(p, x, values, meta, bias, y, (long long)blockIdx.x * blockDim.x + threadIdx.x);
}

template <typename T>
__global__ void sparse_csr_kernel(SparseConvParams p, const T* __restrict__ x, const T* __restrict__ values,
                                  const int* __restrict__ col, const int* __restrict__ row_ptr,
                                  const T* __restrict__ bias, T* __restrict__ y) {
    sparse_csr_thread(p, x, values, col, row_ptr, bias, y, (long long)blockIdx.x * blockDim.x + threadIdx.x);
}
#endif

}  // namespace esq

#include "sparse_fast.cuh"

#endif  // ESQ_SPARSE_CUH
