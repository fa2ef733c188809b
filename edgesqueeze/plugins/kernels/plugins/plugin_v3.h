// IPluginV3 (TensorRT >= 10) versions of the edgesqueeze plugins: a thin adapter over the IPluginV2DynamicExt
// classes, so both APIs run the same shape, format and enqueue code. Built with -DESQ_PLUGIN_V3=1 (CMake option
// ESQ_PLUGIN_V3); the library then hands TensorRT these creators from getCreators() instead of the V2 ones (a
// registry cannot hold both under one name and version).
#ifndef ESQ_PLUGIN_V3_H
#define ESQ_PLUGIN_V3_H

#include "plugin_common.h"

#if NV_TENSORRT_MAJOR >= 10

#include <new>

namespace esq {
namespace trt {

template <typename V2Plugin>
class PluginV3 final : public nvinfer1::IPluginV3,
                       public nvinfer1::IPluginV3OneCore,
                       public nvinfer1::IPluginV3OneBuild,
                       public nvinfer1::IPluginV3OneRuntime {
public:
    explicit PluginV3(V2Plugin* impl) : impl_(impl) {}
    ~PluginV3() override {
        if (impl_ != nullptr) impl_->destroy();
    }
    PluginV3(const PluginV3&) = delete;
    PluginV3& operator=(const PluginV3&) = delete;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override {
        switch (type) {
            case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
            case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
            case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    nvinfer1::IPluginV3* clone() noexcept override {
        nvinfer1::IPluginV2DynamicExt* copy = impl_->clone();
        if (copy == nullptr) return nullptr;
        PluginV3* out = new (std::nothrow) PluginV3(static_cast<V2Plugin*>(copy));
        if (out == nullptr) copy->destroy();
        return out;
    }

    // IPluginV3OneCore
    const char* getPluginName() const noexcept override { return impl_->getPluginType(); }
    const char* getPluginVersion() const noexcept override { return impl_->getPluginVersion(); }
    const char* getPluginNamespace() const noexcept override { return impl_->getPluginNamespace(); }

    // IPluginV3OneBuild
    int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                            const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept override {
        impl_->configurePlugin(in, nbInputs, out, nbOutputs);
        return 0;
    }
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                               const nvinfer1::DataType* inputTypes, int32_t nbInputs) const noexcept override {
        if (nbOutputs != 1 || nbInputs < 1) return -1;
        outputTypes[0] = impl_->getOutputDataType(0, inputTypes, nbInputs);
        return 0;
    }
    int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs, const nvinfer1::DimsExprs*, int32_t,
                            nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            nvinfer1::IExprBuilder& exprBuilder) noexcept override {
        if (nbOutputs != 1) return -1;
        outputs[0] = impl_->getOutputDimensions(0, inputs, nbInputs, exprBuilder);
        return outputs[0].nbDims == 4 ? 0 : -1;
    }
    bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        nvinfer1::PluginTensorDesc desc[kMaxTensors];
        if (nbInputs + nbOutputs > kMaxTensors) return false;
        for (int32_t i = 0; i < nbInputs + nbOutputs; ++i) desc[i] = inOut[i].desc;
        return impl_->supportsFormatCombination(pos, desc, nbInputs, nbOutputs);
    }
    int32_t getNbOutputs() const noexcept override { return 1; }
    size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc*, int32_t, const nvinfer1::DynamicPluginTensorDesc*,
                            int32_t) const noexcept override {
        return 0;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(const nvinfer1::PluginTensorDesc*, int32_t, const nvinfer1::PluginTensorDesc*,
                          int32_t) noexcept override {
        return 0;  // enqueue() reads the shapes from its descriptors
    }
    int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                    const void* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override {
        return impl_->enqueue(inputDesc, outputDesc, inputs, outputs, workspace, stream);
    }
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext*) noexcept override { return clone(); }
    const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override {
        store_.clear();
        impl_->exportFields(store_);
        return store_.collection();
    }

private:
    static const int32_t kMaxTensors = 8;
    V2Plugin* impl_;
    FieldStore store_;
};

template <typename V2Plugin, typename V2Creator>
class PluginCreatorV3 final : public nvinfer1::IPluginCreatorV3One {
public:
    nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                      nvinfer1::TensorRTPhase) noexcept override {
        // Build and runtime phases both start from the attributes (getFieldsToSerialize writes them back).
        nvinfer1::IPluginV2* v2 = v2_.createPlugin(name, fc);
        if (v2 == nullptr) return nullptr;
        PluginV3<V2Plugin>* out = new (std::nothrow) PluginV3<V2Plugin>(static_cast<V2Plugin*>(v2));
        if (out == nullptr) v2->destroy();
        return out;
    }
    const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override { return v2_.getFieldNames(); }
    const char* getPluginName() const noexcept override { return v2_.getPluginName(); }
    const char* getPluginVersion() const noexcept override { return v2_.getPluginVersion(); }
    const char* getPluginNamespace() const noexcept override { return v2_.getPluginNamespace(); }

private:
    V2Creator v2_;
};

}  // namespace trt
}  // namespace esq

#endif  // NV_TENSORRT_MAJOR >= 10
#endif  // ESQ_PLUGIN_V3_H
