// GPU harness: the same entry points as host_harness.cpp, but the kernels run on the GPU through the
// library's launchers (host pointers in, host pointers out). Built by edgesqueeze.plugins.emulate with nvcc
// when a GPU is present; the GPU tests compare it with onnxruntime and with the CPU harness.
#include <cuda_runtime.h>


#include "esq/launch.h"

namespace {

struct DeviceBuffer {
    void* ptr = nullptr;
    DeviceBuffer(const void* host, size_t bytes) {
        if (bytes == 0) bytes = 4;
        if (cudaMalloc(&ptr, bytes) != cudaSuccess) ptr = nullptr;
        if (ptr != nullptr && host != nullptr) cudaMemcpy(ptr, host, bytes, cudaMemcpyHostToDevice);
    }
    ~DeviceBuffer() {
        if (ptr != nullptr) cudaFree(ptr);
    }
};

int finish(cudaError_t launch, void* host_out, const DeviceBuffer& out, size_t bytes) {
    if (launch != cudaSuccess) return (int)launch;
    cudaError_t err = cudaDeviceSynchronize();
    if (err != cudaSuccess) return (int)err;
    err = cudaMemcpy(host_out, out.ptr, bytes, cudaMemcpyDeviceToHost);
    return (int)err;
}

}  // namespace

extern "C" {

int esq_gpu_dwsep(const esq::DwsepParams* p, int dtype, int kernel, const void* x, const void* w_dw,
                  const void* b_dw, const void* w_pw, const void* b_pw, void* y) {
    const size_t e = dtype == 0 ? 4 : 2;
    DeviceBuffer dx(x, e * p->N * p->C * p->H * p->W), dwdw(w_dw, e * p->C * p->KH * p->KW), dbdw(b_dw, e * p->C),
        dwpw(w_pw, e * p->M * p->C), dbpw(b_pw, e * p->M);
    const size_t out_bytes = e * p->N * p->M * p->OH * p->OW;
    DeviceBuffer dy(nullptr, out_bytes);
    cudaError_t err = esq::launch_dwsep(*p, dtype == 0 ? esq::kFloat32 : esq::kFloat16, dx.ptr, dwdw.ptr, dbdw.ptr,
                                        dwpw.ptr, dbpw.ptr, dy.ptr, 0,
                                        static_cast<esq::DwsepKernel>(kernel));
    return finish(err, y, dy, out_bytes);
}

int esq_gpu_dwsep_int8(const esq::DwsepParams* p, float x_scale, float y_scale, const void* x, const float* w_dw,
                       const float* b_dw, const float* w_pw, const float* b_pw, void* y) {
    DeviceBuffer dx(x, (size_t)p->N * p->C * p->H * p->W), dwdw(w_dw, 4 * p->C * p->KH * p->KW),
        dbdw(b_dw, 4 * p->C), dwpw(w_pw, 4 * p->M * p->C), dbpw(b_pw, 4 * p->M),
        ws(nullptr, (size_t)esq::dwsep_int8_workspace_bytes(*p));
    const size_t out_bytes = (size_t)p->N * p->M * p->OH * p->OW;
    DeviceBuffer dy(nullptr, out_bytes);
    esq::DwsepQuant q = {x_scale, y_scale};
    cudaError_t err = esq::launch_dwsep_int8(*p, q, dx.ptr, static_cast<const float*>(dwdw.ptr),
                                             static_cast<const float*>(dbdw.ptr), static_cast<const float*>(dwpw.ptr),
                                             static_cast<const float*>(dbpw.ptr), dy.ptr, ws.ptr, 0);
    return finish(err, y, dy, out_bytes);
}

int esq_gpu_sparse24(const esq::SparseConvParams* p, int dtype, int kernel, const void* x, const void* values,
                     const int* meta, const void* bias, void* y) {
    const size_t e = dtype == 0 ? 4 : 2;
    const int r = esq::sparse_reduction_size(*p);
    DeviceBuffer dx(x, e * p->N * p->C * p->H * p->W), dv(values, e * p->M * (r / 2)),
        dm(meta, sizeof(int) * p->M * esq::sparse24_meta_words(*p)), db(bias, e * p->M);
    const size_t out_bytes = e * p->N * p->M * p->OH * p->OW;
    DeviceBuffer dy(nullptr, out_bytes);
    cudaError_t err = esq::launch_sparse24(*p, dtype == 0 ? esq::kFloat32 : esq::kFloat16, dx.ptr, dv.ptr,
                                           static_cast<const int*>(dm.ptr), db.ptr, dy.ptr, 0,
                                           static_cast<esq::SparseKernel>(kernel));
    return finish(err, y, dy, out_bytes);
}

int esq_gpu_sparse_csr(const esq::SparseConvParams* p, int dtype, int kernel, const void* x, const void* values,
                       const int* col, const int* row_ptr, const void* bias, void* y) {
    const size_t e = dtype == 0 ? 4 : 2;
    const int nnz = row_ptr[p->M];
    DeviceBuffer dx(x, e * p->N * p->C * p->H * p->W), dv(values, e * nnz), dc(col, sizeof(int) * nnz),
        dr(row_ptr, sizeof(int) * (p->M + 1)), db(bias, e * p->M);
    const size_t out_bytes = e * p->N * p->M * p->OH * p->OW;
    DeviceBuffer dy(nullptr, out_bytes);
    cudaError_t err = esq::launch_sparse_csr(*p, dtype == 0 ? esq::kFloat32 : esq::kFloat16, dx.ptr, dv.ptr,
                                             static_cast<const int*>(dc.ptr), static_cast<const int*>(dr.ptr), db.ptr,
                                             dy.ptr, 0, static_cast<esq::SparseKernel>(kernel));
    return finish(err, y, dy, out_bytes);
}

}  // extern "C"
