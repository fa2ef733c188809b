// TensorRT plugin for the ONNX custom op edgesqueeze::SparseConv (IPluginV2DynamicExt).
#ifndef ESQ_SPARSE_PLUGIN_H
#define ESQ_SPARSE_PLUGIN_H

#include <string>

#include "plugin_common.h"

namespace esq {
namespace trt {

enum SparseFormat { kFormat24 = 0, kFormatCsr = 1 };

struct SparseAttrs {
    int format;  // SparseFormat
    int kernel[2];
    int strides[2];
    int pads[4];  // ONNX order
    int dilations[2];
    int act;
    float alpha, beta;
};

class SparseConvPlugin final : public nvinfer1::IPluginV2DynamicExt {
public:
    explicit SparseConvPlugin(const SparseAttrs& attrs);
    SparseConvPlugin(const void* data, size_t length);
    bool valid() const { return valid_; }
    void exportFields(FieldStore& out) const;

    nvinfer1::IPluginV2DynamicExt* clone() const noexcept override;
    nvinfer1::DimsExprs getOutputDimensions(int32_t outputIndex, const nvinfer1::DimsExprs* inputs, int32_t nbInputs,
                                            nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, const nvinfer1::PluginTensorDesc* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override;
    void configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                         const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(const nvinfer1::PluginTensorDesc* inputs, int32_t nbInputs,
                            const nvinfer1::PluginTensorDesc* outputs, int32_t nbOutputs) const noexcept override;
    int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                    const void* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override;
    nvinfer1::DataType getOutputDataType(int32_t index, const nvinfer1::DataType* inputTypes,
                                         int32_t nbInputs) const noexcept override;
    const char* getPluginType() const noexcept override;
    const char* getPluginVersion() const noexcept override;
    int32_t getNbOutputs() const noexcept override;
    int32_t initialize() noexcept override;
    void terminate() noexcept override;
    size_t getSerializationSize() const noexcept override;
    void serialize(void* buffer) const noexcept override;
    void destroy() noexcept override;
    void setPluginNamespace(const char* pluginNamespace) noexcept override;
    const char* getPluginNamespace() const noexcept override;

private:
    int num_inputs() const { return attrs_.format == kFormat24 ? 4 : 5; }
    bool is_index_input(int pos) const { return pos == 2 || (attrs_.format == kFormatCsr && pos == 3); }
    SparseAttrs attrs_;
    std::string namespace_;
    bool valid_ = true;
};

class SparseConvPluginCreator final : public nvinfer1::IPluginCreator {
public:
    SparseConvPluginCreator();
    const char* getPluginName() const noexcept override;
    const char* getPluginVersion() const noexcept override;
    const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override;
    nvinfer1::IPluginV2* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc) noexcept override;
    nvinfer1::IPluginV2* deserializePlugin(const char* name, const void* serialData,
                                           size_t serialLength) noexcept override;
    void setPluginNamespace(const char* pluginNamespace) noexcept override;
    const char* getPluginNamespace() const noexcept override;

private:
    FieldList fields_;
    std::string namespace_;
};

}  // namespace trt
}  // namespace esq

#endif  // ESQ_SPARSE_PLUGIN_H
