// TensorRT plugin for the ONNX custom op edgesqueeze::DepthwiseSeparableConv (IPluginV2DynamicExt).
#ifndef ESQ_DWSEP_PLUGIN_H
#define ESQ_DWSEP_PLUGIN_H

#include <string>

#include "plugin_common.h"

namespace esq {
namespace trt {

// The node's attributes, in the plugin's serialised form.
struct DwsepAttrs {
    int kernel[2];
    int strides[2];
    int pads[4];  // ONNX order: top, left, bottom, right
    int dilations[2];
    int dw_act, pw_act;
    float dw_alpha, dw_beta, pw_alpha, pw_beta;
};

class DwsepPlugin final : public nvinfer1::IPluginV2DynamicExt {
public:
    explicit DwsepPlugin(const DwsepAttrs& attrs);
    DwsepPlugin(const void* data, size_t length);  // deserialise; valid() false on a bad blob
    bool valid() const { return valid_; }
    // The creation attributes as plugin fields (what the IPluginV3 adapter serialises).
    void exportFields(FieldStore& out) const;

    // IPluginV2DynamicExt
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
    // IPluginV2Ext
    nvinfer1::DataType getOutputDataType(int32_t index, const nvinfer1::DataType* inputTypes,
                                         int32_t nbInputs) const noexcept override;
    // IPluginV2
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
    DwsepParams params(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc) const;
    DwsepAttrs attrs_;
    std::string namespace_;
    bool valid_ = true;
};

class DwsepPluginCreator final : public nvinfer1::IPluginCreator {
public:
    DwsepPluginCreator();
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

#endif  // ESQ_DWSEP_PLUGIN_H
