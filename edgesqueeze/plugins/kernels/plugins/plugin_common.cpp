// Helpers shared by the edgesqueeze TensorRT plugins.
#include "plugin_common.h"

#include <cstdio>

namespace esq {
namespace trt {

namespace {
const char* const kActivationNames[] = {"none", "relu", "clip", "leaky_relu", "sigmoid", "hard_sigmoid",
                                        "hard_swish"};
const int kNumActivations = 7;
}  // namespace

void log_error(const char* plugin, const std::string& message) noexcept {
    std::fprintf(stderr, "[edgesqueeze plugin %s] ERROR: %s\n", plugin, message.c_str());
}

int activation_from_name(const std::string& name) noexcept {
    for (int i = 0; i < kNumActivations; ++i) {
        if (name == kActivationNames[i]) return i;
    }
    return -1;
}

const char* activation_name(int act) noexcept {
    return (act >= 0 && act < kNumActivations) ? kActivationNames[act] : "?";
}

const nvinfer1::PluginField* Fields::find(const char* name) const noexcept {
    if (fc_ == nullptr) return nullptr;
    for (int32_t i = 0; i < fc_->nbFields; ++i) {
        const nvinfer1::PluginField& f = fc_->fields[i];
        if (f.name != nullptr && std::strcmp(f.name, name) == 0) return &f;
    }
    return nullptr;
}

bool Fields::ints(const char* name, int* out, int count) const noexcept {
    const nvinfer1::PluginField* f = find(name);
    if (f == nullptr || f->data == nullptr || f->length != count) return false;
    if (f->type == nvinfer1::PluginFieldType::kINT32) {
        const int32_t* v = static_cast<const int32_t*>(f->data);
        for (int i = 0; i < count; ++i) out[i] = v[i];
        return true;
    }
    return false;
}

bool Fields::real(const char* name, float* out) const noexcept {
    const nvinfer1::PluginField* f = find(name);
    if (f == nullptr || f->data == nullptr || f->length < 1) return false;
    if (f->type == nvinfer1::PluginFieldType::kFLOAT32) {
        *out = *static_cast<const float*>(f->data);
        return true;
    }
    if (f->type == nvinfer1::PluginFieldType::kFLOAT64) {
        *out = static_cast<float>(*static_cast<const double*>(f->data));
        return true;
    }
    return false;
}

bool Fields::text(const char* name, std::string* out) const noexcept {
    const nvinfer1::PluginField* f = find(name);
    if (f == nullptr || f->data == nullptr) return false;
    if (f->type != nvinfer1::PluginFieldType::kCHAR && f->type != nvinfer1::PluginFieldType::kUNKNOWN) return false;
    const char* s = static_cast<const char*>(f->data);
    size_t n = 0;
    while (n < static_cast<size_t>(f->length) && s[n] != '\0') ++n;  // parsers differ on the trailing NUL
    out->assign(s, n);
    return true;
}

const nvinfer1::IDimensionExpr* conv_out_expr(nvinfer1::IExprBuilder& b, const nvinfer1::IDimensionExpr* in,
                                              int kernel, int stride, int pad_begin, int pad_end,
                                              int dilation) noexcept {
    using nvinfer1::DimensionOperation;
    // (in + pads - dilation*(kernel-1) - 1) / stride + 1
    const nvinfer1::IDimensionExpr* num =
        b.operation(DimensionOperation::kSUM, *in, *b.constant(pad_begin + pad_end - dilation * (kernel - 1) - 1));
    const nvinfer1::IDimensionExpr* q = b.operation(DimensionOperation::kFLOOR_DIV, *num, *b.constant(stride));
    return b.operation(DimensionOperation::kSUM, *q, *b.constant(1));
}

bool is_float_or_half(nvinfer1::DataType t) noexcept {
    return t == nvinfer1::DataType::kFLOAT || t == nvinfer1::DataType::kHALF;
}

ElementType element_type(nvinfer1::DataType t) noexcept {
    return t == nvinfer1::DataType::kHALF ? kFloat16 : kFloat32;
}

}  // namespace trt
}  // namespace esq
