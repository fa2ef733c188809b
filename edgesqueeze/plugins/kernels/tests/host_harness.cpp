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

template <typename T>
void run_dwsep_reference(const esq::DwsepParams& p, const T* x, const T* w_dw, const T* b_dw, const T* w_pw,
                         const T* b_pw, T* y) {
    const long long total = (long long)p.N * p.M * p.OH * p.OW;
    for (long long index = 0; index < total; ++index) esq::dwsep_reference_thread(p, x, w_dw, b_dw, w_pw, b_pw, y, index);
}

long long sparse_outputs(const esq::SparseConvParams& p) { return (long long)p.N * p.M * p.OH * p.OW; }

}  // namespace

extern "C" {

// dtype: 0 = float32, 1 = float16 (arrays of IEEE binary16 bit patterns). tiled: 0 = reference kernel.
int esq_host_dwsep(const esq::DwsepParams* p, int dtype, int tiled, const void* x, const void* w_dw,
                   const void* b_dw, const void* w_pw, const void* b_pw, void* y) {
    if (dtype == 0) {
        auto f = tiled ? run_dwsep_tiled<float> : run_dwsep_reference<float>;
        f(*p, (const float*)x, (const float*)w_dw, (const float*)b_dw, (const float*)w_pw, (const float*)b_pw,
          (float*)y);
    } else {
        typedef esq::half_t H;
        auto f = tiled ? run_dwsep_tiled<H> : run_dwsep_reference<H>;
        f(*p, (const H*)x, (const H*)w_dw, (const H*)b_dw, (const H*)w_pw, (const H*)b_pw, (H*)y);
    }
    return 0;
}

int esq_host_sparse24(const esq::SparseConvParams* p, int dtype, const void* x, const void* values, const int* meta,
                      const void* bias, void* y) {
    for (long long i = 0; i < sparse_outputs(*p); ++i) {
        if (dtype == 0)
            esq::sparse24_thread(*p, (const float*)x, (const float*)values, meta, (const float*)bias, (float*)y, i);
        else
            esq::sparse24_thread(*p, (const esq::half_t*)x, (const esq::half_t*)values, meta,
                                 (const esq::half_t*)bias, (esq::half_t*)y, i);
    }
    return 0;
}

int esq_host_sparse_csr(const esq::SparseConvParams* p, int dtype, const void* x, const void* values, const int* col,
                        const int* row_ptr, const void* bias, void* y) {
    for (long long i = 0; i < sparse_outputs(*p); ++i) {
        if (dtype == 0)
            esq::sparse_csr_thread(*p, (const float*)x, (const float*)values, col, row_ptr, (const float*)bias,
                                   (float*)y, i);
        else
            esq::sparse_csr_thread(*p, (const esq::half_t*)x, (const esq::half_t*)values, col, row_ptr,
                                   (const esq::half_t*)bias, (esq::half_t*)y, i);
    }
    return 0;
}

// float -> binary16 -> float through the harness's conversion (tests it against numpy).
void esq_host_round_half(const float* in, float* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = esq::to_float(esq::from_float<esq::half_t>(in[i]));
}

}  // extern "C"
