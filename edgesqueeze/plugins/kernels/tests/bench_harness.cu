// GPU micro-benchmark of the fused depthwise-separable and the sparse kernels (edgesqueeze plugins bench): device
// buffers of data, one warm-up launch, then `iters` launches timed with CUDA events. Built with nvcc at run time.
#include <cuda_runtime.h>

#include <vector>

#include "esq/launch.h"

namespace {

// One warm-up call of launch(), then `iters` calls between two CUDA events; the mean milliseconds go to *ms.
template <typename Launch>
cudaError_t time_launches(int iters, float* ms, cudaError_t err, Launch launch) {
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    for (int it = -1; it < iters && err == cudaSuccess; ++it) {  // it = -1: warm-up
        if (it == 0) cudaEventRecord(start);
        err = launch();
    }
    cudaEventRecord(stop);
    if (err == cudaSuccess) err = cudaEventSynchronize(stop);
    float total = 0.f;
    if (err == cudaSuccess) cudaEventElapsedTime(&total, start, stop);
    *ms = iters > 0 ? total / iters : 0.f;
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return err;
}

}  // namespace

extern "C" {

// kernel: esq::DwsepKernel (0 reference, 1 fast, 2 chunked), 3 = INT8 fast. Writes the mean milliseconds per launch.
int esq_bench_dwsep(const esq::DwsepParams* p, int dtype, int kernel, int iters, float* ms) {
    const size_t e = kernel == 3 ? 1 : (dtype == 0 ? 4 : 2), we = kernel == 3 ? 4 : e;
    const size_t nx = (size_t)p->N * p->C * p->H * p->W, ny = (size_t)p->N * p->M * p->OH * p->OW;
    const size_t sizes[6] = {nx * e, (size_t)p->C * p->KH * p->KW * we, p->C * we, (size_t)p->M * p->C * we,
                             p->M * we, ny * e};
    void* buf[7] = {nullptr};
    cudaError_t err = cudaSuccess;
    for (int i = 0; i < 6 && err == cudaSuccess; ++i) {
        err = cudaMalloc(&buf[i], sizes[i]);
        if (err == cudaSuccess) err = cudaMemset(buf[i], 0x11, sizes[i]);  // finite values in FP32, FP16 and INT8
    }
    if (err == cudaSuccess) err = cudaMalloc(&buf[6], (size_t)esq::dwsep_int8_workspace_bytes(*p));
    err = time_launches(iters, ms, err, [&]() {
        if (kernel == 3) {
            esq::DwsepQuant q = {0.02f, 0.05f};
            return esq::launch_dwsep_int8(*p, q, buf[0], (const float*)buf[1], (const float*)buf[2],
                                          (const float*)buf[3], (const float*)buf[4], buf[5], buf[6], 0);
        }
        return esq::launch_dwsep(*p, dtype == 0 ? esq::kFloat32 : esq::kFloat16, buf[0], buf[1], buf[2], buf[3],
                                 buf[4], buf[5], 0, static_cast<esq::DwsepKernel>(kernel));
    });
    for (void* b : buf) cudaFree(b);
    return (int)err;
}

// fmt 0 = 2:4 (index = metadata, row_ptr unused), 1 = CSR (index = col); values/index/row_ptr are host arrays of
// n_values elements of the dtype / n_index int32 / M + 1 int32. kernel: esq::SparseKernel (0 reference, 1 tiled).
int esq_bench_sparse(const esq::SparseConvParams* p, int dtype, int fmt, int kernel, const void* values,
                     long long n_values, const int* index, long long n_index, const int* row_ptr, int iters,
                     float* ms) {
    const size_t e = dtype == 0 ? 4 : 2;
    const size_t sizes[6] = {(size_t)p->N * p->C * p->H * p->W * e, (size_t)n_values * e, (size_t)n_index * 4,
                             (size_t)(p->M + 1) * 4, (size_t)p->M * e, (size_t)p->N * p->M * p->OH * p->OW * e};
    const void* host[4] = {nullptr, values, index, row_ptr};
    void* buf[6] = {nullptr};
    cudaError_t err = cudaSuccess;
    for (int i = 0; i < 6 && err == cudaSuccess; ++i) {
        err = cudaMalloc(&buf[i], sizes[i] ? sizes[i] : 4);
        if (err == cudaSuccess && i >= 1 && i <= 3 && host[i] && sizes[i])
            err = cudaMemcpy(buf[i], host[i], sizes[i], cudaMemcpyHostToDevice);
        else if (err == cudaSuccess)
            err = cudaMemset(buf[i], 0x11, sizes[i]);
    }
    const esq::ElementType type = dtype == 0 ? esq::kFloat32 : esq::kFloat16;
    const esq::SparseKernel which = static_cast<esq::SparseKernel>(kernel);
    err = time_launches(iters, ms, err, [&]() {
        return fmt == 0 ? esq::launch_sparse24(*p, type, buf[0], buf[1], (const int*)buf[2], buf[4], buf[5], 0, which)
                        : esq::launch_sparse_csr(*p, type, buf[0], buf[1], (const int*)buf[2], (const int*)buf[3],
                                                 buf[4], buf[5], 0, which);
    });
    for (void* b : buf) cudaFree(b);
    return (int)err;
}

}  // extern "C"
