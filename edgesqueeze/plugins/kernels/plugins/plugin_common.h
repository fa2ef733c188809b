// Helpers shared by the edgesqueeze TensorRT plugins (TensorRT 8.2 .. 10.x, IPluginV2DynamicExt).
#ifndef ESQ_PLUGIN_COMMON_H
#define ESQ_PLUGIN_COMMON_H

#include <NvInfer.h>
#include <NvInferRuntime.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "esq/launch.h"

#ifndef NV_TENSORRT_MAJOR
#error "NvInfer.h did not define NV_TENSORRT_MAJOR"
#endif
#define ESQ_TRT_VERSION (NV_TENSORRT_MAJOR * 100 + NV_TENSORRT_MINOR)

namespace esq {
namespace trt {

// Plugin logging goes to stderr: TensorRT 8.2 has no way for a plugin library to find the application's logger.
void log_error(const char* plugin, const std::string& message) noexcept;

// Activation name as used by the ONNX nodes ("none", "relu", ...) → esq::Activation; -1 when unknown.
int activation_from_name(const std::string& name) noexcept;
const char* activation_name(int act) noexcept;

// Attribute values from a PluginFieldCollection (the ONNX parser turns node attributes into fields:
// ints → kINT32 arrays, floats → kFLOAT32, strings → kCHAR with `length` bytes, not NUL-terminated).
class Fields {
public:
    explicit Fields(const nvinfer1::PluginFieldCollection* fc) : fc_(fc) {}
    bool ints(const char* name, int* out, int count) const noexcept;
    bool real(const char* name, float* out) const noexcept;
    bool text(const char* name, std::string* out) const noexcept;

private:
    const nvinfer1::PluginField* find(const char* name) const noexcept;
    const nvinfer1::PluginFieldCollection* fc_;
};

// Plain-old-data (de)serialisation.
template <typename T>
void write_pod(char*& p, const T& v) {
    std::memcpy(p, &v, sizeof(T));
    p += sizeof(T);
}
template <typename T>
bool read_pod(const char*& p, const char* end, T* v) {
    if (p + sizeof(T) > end) return false;
    std::memcpy(v, p, sizeof(T));
    p += sizeof(T);
    return true;
}

// Output size of a convolution along one axis, as a TensorRT shape expression.
const nvinfer1::IDimensionExpr* conv_out_expr(nvinfer1::IExprBuilder& b, const nvinfer1::IDimensionExpr* in,
                                              int kernel, int stride, int pad_begin, int pad_end,
                                              int dilation) noexcept;

bool is_float_or_half(nvinfer1::DataType t) noexcept;
ElementType element_type(nvinfer1::DataType t) noexcept;

// A field list that stays valid for the lifetime of a creator.
struct FieldList {
    std::vector<nvinfer1::PluginField> fields;
    nvinfer1::PluginFieldCollection collection;
    void finish() {
        collection.nbFields = static_cast<int32_t>(fields.size());
        collection.fields = fields.data();
    }
};

// A plugin's attributes written back as PluginFields of the types the ONNX parser uses (IPluginV3 serialises
// through these). deques keep the element addresses stable while fields point into them.
class FieldStore {
public:
    void clear() {
        fields_.clear();
        ints_.clear();
        floats_.clear();
        strings_.clear();
    }
    void add_ints(const char* name, const int* v, int count) {
        ints_.emplace_back(v, v + count);
        fields_.push_back(nvinfer1::PluginField(name, ints_.back().data(), nvinfer1::PluginFieldType::kINT32, count));
    }
    void add_float(const char* name, float v) {
        floats_.push_back(v);
        fields_.push_back(nvinfer1::PluginField(name, &floats_.back(), nvinfer1::PluginFieldType::kFLOAT32, 1));
    }
    void add_string(const char* name, const std::string& v) {
        strings_.push_back(v);
        fields_.push_back(nvinfer1::PluginField(name, strings_.back().c_str(), nvinfer1::PluginFieldType::kCHAR,
                                                static_cast<int32_t>(v.size())));
    }
    const nvinfer1::PluginFieldCollection* collection() {
        collection_.nbFields = static_cast<int32_t>(fields_.size());
        collection_.fields = fields_.data();
        return &collection_;
    }

private:
    std::vector<nvinfer1::PluginField> fields_;
    std::deque<std::vector<int32_t>> ints_;
    std::deque<float> floats_;
    std::deque<std::string> strings_;
    nvinfer1::PluginFieldCollection collection_;
};

}  // namespace trt
}  // namespace esq

#endif  // ESQ_PLUGIN_COMMON_H
