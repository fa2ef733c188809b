// CPU harness: runs the kernels' __host__ __device__ functions for every block and thread index,
// exactly as the __global__ kernels map them, so the arithmetic is testable without a GPU.
// Built by edgesqueeze.plugins.emulate with g++ -std=c++14 into a shared library used through ctypes.
#include <vector>

#include "esq/dwsep.cuh"
#include "esq/sparse.cuh"

namespace {

template <typename T>
void run_dwsep_tiled(const esq::DwsepParams& p, const T* x, const T* w_dw, const T* b_dw, const T* w_pw,
                     const T* b_pw, T* y) {
    using namespace esq;
    std::vector<float> s_dw(kDwsepTC * kDwsepTP), s_w(kDwsepTM * kDwsepTC);
    std::vector<float> acc(kDwsepThreads * kDwsepOutPerThread);
    const long long tiles_p = dwsep_tiles_p(p);
    const int tiles_m = dwsep_tiles_m(p);
    for (int tile_m = 0; tile_m < tiles_m; ++tile_m) {          // blockIdx.y
        for (long long tile_p = 0; tile_p < tiles_p; ++tile_p) {  // blockIdx.x
            for (size_t i = 0; i < acc.size(); ++i) acc[i] = 0.f;
            for (int c0 = 0; c0 < p.C; c0 += kDwsepTC) {
                for (int tid = 0; tid < kDwsepThreads; ++tid)
                    dwsep_tile_load(p, x, w_dw, b_dw, w_pw, (int)tile_p, tile_m, c0, tid, s_dw.data(), s_w.data());
                // __syncthreads()
                for (int tid = 0; tid < kDwsepThreads; ++tid)
                    dwsep_tile_accumulate(tid, s_dw.data(), s_w.data(), &acc[tid * kDwsepOutPerThread]);
                // __syncthreads()
            }
            for (int tid = 0; tid < kDwsepThreads; ++tid)
                dwsep_tile_store(p, b_pw, (int)tile_p, tile_m, tid, &acc[tid * kDwsepOutPerThread], y);
        }
    }
}

// The fast kernel (dwsep_fast.cuh): one block per 32-pixel tile, every output channel inside it.
template <typename T>
void run_dwsep_fast(const esq::DwsepParams& p, const T* x, const T* w_dw, const T* b_dw, const T* w_pw,
                    const T* b_pw, T* y) {
    using namespace esq;
    typedef typename FastSmem<T>::type S;
    std::vector<S> s_w(kFastTC * kFastTM), s_dw(dwsep_fast_cpad(p) * kFastTP);
    std::vector<float> acc(kFastThreads * 16);
    for (long long tile = 0; tile < dwsep_fast_tiles(p); ++tile) {  // blockIdx.x
        for (int tid = 0; tid < kFastThreads; ++tid) dwsep_fast_depthwise(p, x, w_dw, b_dw, tile, tid, s_dw.data());
        for (int m0 = 0; m0 < p.M; m0 += kFastTM) {
            for (size_t i = 0; i < acc.size(); ++i) acc[i] = 0.f;
            for (int c0 = 0; c0 < p.C; c0 += kFastTC) {
                for (int tid = 0; tid < kFastThreads; ++tid) dwsep_fast_weights(p, w_pw, m0, c0, tid, s_w.data());
                for (int tid = 0; tid < kFastThreads; ++tid)
                    dwsep_fast_accumulate(tid, c0, s_dw.data(), s_w.data(), &acc[tid * 16]);
            }
            for (int tid = 0; tid < kFastThreads; ++tid) dwsep_fast_store(p, b_pw, tile, m0, tid, &acc[tid * 16], y);
        }
    }
}

// The INT8 kernel and the weight quantisation it runs first.
void run_dwsep_int8(const esq::DwsepParams& p, esq::DwsepQuant q, const signed char* x, const float* w_dw,
                    const float* b_dw, const float* w_pw, const float* b_pw, signed char* y) {
    using namespace esq;
    const int cpad = dwsep_fast_cpad(p);
    std::vector<signed char> wq((size_t)p.M * cpad);
    std::vector<float> w_scale(p.M), s_sd((cpad / kFastTC) * kFastTP), acc(kFastThreads * 16);
    std::vector<int> s_wq((kFastTC / 4) * kFastTM), s_dq((cpad / 4) * kFastTP);
    for (int m = 0; m < p.M; ++m) dwsep_quantize_weight_row(p, w_pw, m, wq.data(), w_scale.data());
    for (long long tile = 0; tile < dwsep_fast_tiles(p); ++tile) {
        for (int tid = 0; tid < kFastThreads; ++tid)
            dwsep_fast_depthwise_int8(p, x, w_dw, b_dw, q.x_scale, tile, tid, s_dq.data(), s_sd.data());
        for (int m0 = 0; m0 < p.M; m0 += kFastTM) {
            for (size_t i = 0; i < acc.size(); ++i) acc[i] = 0.f;
            for (int c0 = 0; c0 < p.C; c0 += kFastTC) {
                for (int tid = 0; tid < kFastThreads; ++tid) dwsep_fast_weights_int8(p, wq.data(), m0, c0, tid, s_wq.data());
                for (int tid = 0; tid < kFastThreads; ++tid)
                    dwsep_fast_accumulate_int8(tid, c0, s_dq.data(), s_sd.data(), s_wq.data(), &acc[tid * 16]);
            }
            for (int tid = 0; tid < kFastThreads; ++tid)
                dwsep_fast_store_int8(p, b_pw, w_scale.data(), q.y_scale, tile, m0, tid, &acc[tid * 16], y);
        }
    }
}

template <typename T>
void run_dwsep_reference(const esq::DwsepParams& p, const T* x, const T* w_dw, const T* b_dw, const T* w_pw,
                         const T* b_pw, T* y) {
    const long long total = (long long)p.N * p.M * p.OH * p.OW;
    for (long long index = 0; index < total; ++index) esq::dwsep_reference_thread(p, x, w_dw, b_dw, w_pw, b_pw, y, index);
}

long long sparse_outputs(const esq::SparseConvParams& p) { return (long long)p.N * p.M * p.OH * p.OW; }

// The tiled sparse kernels (sparse_fast.cuh): blockIdx.y over 32-row groups, blockIdx.x over 256-pixel tiles;
// `rows_24` = true for 2:4 (values/index = values/meta), false for CSR (values/index/row_ptr).
template <typename T>
void run_sparse_fast(const esq::SparseConvParams& p, bool rows_24, const T* x, const T* values, const int* index,
                     const int* row_ptr, const T* bias, T* y) {
    using namespace esq;
    std::vector<T> s_x(kSpRC * kSpTP);
    std::vector<float> acc(kSpThreads * kSpAcc);
    std::vector<int> cursor(kSpThreads * kSpRowsPerWarp);
    for (int tile_m = 0; tile_m < sparse_fast_tiles_m(p); ++tile_m) {
        for (long long tile = 0; tile < sparse_fast_tiles_p(p); ++tile) {
            for (size_t i = 0; i < acc.size(); ++i) acc[i] = 0.f;
            if (!rows_24)
                for (int tid = 0; tid < kSpThreads; ++tid)
                    sparse_fast_csr_cursors(p, row_ptr, tile_m, tid, &cursor[tid * kSpRowsPerWarp]);
            for (int r0 = 0; r0 < sparse_reduction_size(p); r0 += kSpRC) {
                for (int tid = 0; tid < kSpThreads; ++tid) sparse_fast_stage(p, x, tile, r0, tid, s_x.data());
                for (int tid = 0; tid < kSpThreads; ++tid) {
                    if (rows_24)
                        sparse_fast_24_accumulate(p, values, index, s_x.data(), tile_m, r0, tid, &acc[tid * kSpAcc]);
                    else
                        sparse_fast_csr_accumulate(p, values, index, row_ptr, s_x.data(), tile_m, r0, tid,
                                                   &cursor[tid * kSpRowsPerWarp], &acc[tid * kSpAcc]);
                }
            }
            for (int tid = 0; tid < kSpThreads; ++tid)
                sparse_fast_store(p, bias, tile, tile_m, tid, &acc[tid * kSpAcc], y);
        }
    }
}

}  // namespace

extern "C" {

// dtype: 0 = float32, 1 = float16 (arrays of IEEE binary16 bit patterns).
// kernel: esq::DwsepKernel numbering: 0 = reference, 1 = fast (the launchers' default), 2 = chunked.
int esq_host_dwsep(const esq::DwsepParams* p, int dtype, int kernel, const void* x, const void* w_dw,
                   const void* b_dw, const void* w_pw, const void* b_pw, void* y) {
    if (dtype == 0) {
        auto f = kernel == 1 ? run_dwsep_fast<float> : kernel == 2 ? run_dwsep_tiled<float> : run_dwsep_reference<float>;
        f(*p, (const float*)x, (const float*)w_dw, (const float*)b_dw, (const float*)w_pw, (const float*)b_pw,
          (float*)y);
    } else {
        typedef esq::half_t H;
        auto f = kernel == 1 ? run_dwsep_fast<H> : kernel == 2 ? run_dwsep_tiled<H> : run_dwsep_reference<H>;
        f(*p, (const H*)x, (const H*)w_dw, (const H*)b_dw, (const H*)w_pw, (const H*)b_pw, (H*)y);
    }
    return 0;
}

// INT8 X and Y with per-tensor scales, FP32 weights and biases.
int esq_host_dwsep_int8(const esq::DwsepParams* p, float x_scale, float y_scale, const void* x, const float* w_dw,
                        const float* b_dw, const float* w_pw, const float* b_pw, void* y) {
    esq::DwsepQuant q = {x_scale, y_scale};
    run_dwsep_int8(*p, q, (const signed char*)x, w_dw, b_dw, w_pw, b_pw, (signed char*)y);
    return 0;
}

// kernel: esq::SparseKernel numbering: 0 = one thread per output (reference), 1 = tiled (the launchers' default).
int esq_host_sparse24(const esq::SparseConvParams* p, int dtype, int kernel, const void* x, const void* values,
                      const int* meta, const void* bias, void* y) {
    typedef esq::half_t H;
    if (kernel == 1) {
        if (dtype == 0)
            run_sparse_fast(*p, true, (const float*)x, (const float*)values, meta, nullptr, (const float*)bias,
                            (float*)y);
        else
            run_sparse_fast(*p, true, (const H*)x, (const H*)values, meta, nullptr, (const H*)bias, (H*)y);
        return 0;
    }
    for (long long i = 0; i < sparse_outputs(*p); ++i) {
        if (dtype == 0)
            esq::sparse24_thread(*p, (const float*)x, (const float*)values, meta, (const float*)bias, (float*)y, i);
        else
            esq::sparse24_thread(*p, (const H*)x, (const H*)values, meta, (const H*)bias, (H*)y, i);
    }
    return 0;
}

int esq_host_sparse_csr(const esq::SparseConvParams* p, int dtype, int kernel, const void* x, const void* values,
                        const int* col, const int* row_ptr, const void* bias, void* y) {
    typedef esq::half_t H;
    if (kernel == 1) {
        if (dtype == 0)
            run_sparse_fast(*p, false, (const float*)x, (const float*)values, col, row_ptr, (const float*)bias,
                            (float*)y);
        else
            run_sparse_fast(*p, false, (const H*)x, (const H*)values, col, row_ptr, (const H*)bias, (H*)y);
        return 0;
    }
    for (long long i = 0; i < sparse_outputs(*p); ++i) {
        if (dtype == 0)
            esq::sparse_csr_thread(*p, (const float*)x, (const float*)values, col, row_ptr, (const float*)bias,
                                   (float*)y, i);
        else
            esq::sparse_csr_thread(*p, (const H*)x, (const H*)values, col, row_ptr, (const H*)bias, (H*)y, i);
    }
    return 0;
}

// float -> binary16 -> float through the harness's conversion (tests it against numpy).
void esq_host_round_half(const float* in, float* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = esq::to_float(esq::from_float<esq::half_t>(in[i]));
}

}  // extern "C"
