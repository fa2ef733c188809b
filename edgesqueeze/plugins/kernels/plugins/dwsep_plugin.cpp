// TensorRT plugin for edgesqueeze::DepthwiseSeparableConv: X, W_dw, B_dw, W_pw, B_pw → Y (NCHW linear; FP32, FP16,
// or INT8 X and Y with FP32 weights and biases).
#include "dwsep_plugin.h"

#include <new>

namespace esq {
namespace trt {

namespace {
const char* const kName = "DepthwiseSeparableConv";
const char* const kVersion = "1";
const uint32_t kMagic = 0x45534431u;  // "ESD1": format of the serialised attributes
}  // namespace

DwsepPlugin::DwsepPlugin(const DwsepAttrs& attrs) : attrs_(attrs) {}

DwsepPlugin::DwsepPlugin(const void* data, size_t length) {
    const char* p = static_cast<const char*>(data);
    const char* end = p + length;
    uint32_t magic = 0;
    valid_ = read_pod(p, end, &magic) && magic == kMagic && read_pod(p, end, &attrs_) && p == end;
}

void DwsepPlugin::exportFields(FieldStore& out) const {
    out.add_ints("kernel_shape", attrs_.kernel, 2);
    out.add_ints("strides", attrs_.strides, 2);
    out.add_ints("pads", attrs_.pads, 4);
    out.add_ints("dilations", attrs_.dilations, 2);
    out.add_string("dw_activation", activation_name(attrs_.dw_act));
    out.add_string("pw_activation", activation_name(attrs_.pw_act));
    out.add_float("dw_alpha", attrs_.dw_alpha);
    out.add_float("dw_beta", attrs_.dw_beta);
    out.add_float("pw_alpha", attrs_.pw_alpha);
    out.add_float("pw_beta", attrs_.pw_beta);
}

nvinfer1::IPluginV2DynamicExt* DwsepPlugin::clone() const noexcept {
    DwsepPlugin* copy = new (std::nothrow) DwsepPlugin(attrs_);
    if (copy != nullptr) copy->setPluginNamespace(namespace_.c_str());
    return copy;
}

nvinfer1::DimsExprs DwsepPlugin::getOutputDimensions(int32_t outputIndex, const nvinfer1::DimsExprs* inputs,
                                                     int32_t nbInputs, nvinfer1::IExprBuilder& b) noexcept {
    nvinfer1::DimsExprs out;
    out.nbDims = 0;
    if (outputIndex != 0 || nbInputs != 5 || inputs[0].nbDims != 4 || inputs[3].nbDims != 4) {
        log_error(kName, "expects 5 inputs X[N,C,H,W], W_dw, B_dw, W_pw[M,C,1,1], B_pw and 1 output");
        return out;
    }
    out.nbDims = 4;
    out.d[0] = inputs[0].d[0];
    out.d[1] = inputs[3].d[0];
    out.d[2] = conv_out_expr(b, inputs[0].d[2], attrs_.kernel[0], attrs_.strides[0], attrs_.pads[0], attrs_.pads[2],
                             attrs_.dilations[0]);
    out.d[3] = conv_out_expr(b, inputs[0].d[3], attrs_.kernel[1], attrs_.strides[1], attrs_.pads[1], attrs_.pads[3],
                             attrs_.dilations[1]);
    return out;
}

bool DwsepPlugin::supportsFormatCombination(int32_t pos, const nvinfer1::PluginTensorDesc* inOut, int32_t nbInputs,
                                            int32_t nbOutputs) noexcept {
    if (nbInputs != 5 || nbOutputs != 1 || pos < 0 || pos >= 6) return false;
    const nvinfer1::PluginTensorDesc& d = inOut[pos];
    if (d.format != nvinfer1::TensorFormat::kLINEAR) return false;
    if (pos == 0) return is_float_or_half(d.type) || d.type == nvinfer1::DataType::kINT8;
    if (inOut[0].type == nvinfer1::DataType::kINT8) {  // INT8 X and Y (no reformat in INT8 engines), FP32 weights
        return d.type == (pos == 5 ? nvinfer1::DataType::kINT8 : nvinfer1::DataType::kFLOAT);
    }
    return d.type == inOut[0].type;  // FP32/FP16: weights, biases and output in the input's precision
}

void DwsepPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                                  const nvinfer1::DynamicPluginTensorDesc*, int32_t) noexcept {
    if (nbInputs != 5) return;
    const nvinfer1::Dims& x = in[0].desc.dims;
    const nvinfer1::Dims& w_dw = in[1].desc.dims;
    if (x.nbDims == 4 && w_dw.nbDims == 4 && x.d[1] > 0 && w_dw.d[0] > 0 && x.d[1] != w_dw.d[0]) {
        log_error(kName, "W_dw's channel count differs from X's");
    }
}

size_t DwsepPlugin::getWorkspaceSize(const nvinfer1::PluginTensorDesc* inputs, int32_t nbInputs,
                                     const nvinfer1::PluginTensorDesc* outputs, int32_t) const noexcept {
    // The depthwise intermediate lives in shared memory, never in a workspace; INT8 quantises the pointwise weights.
    if (nbInputs != 5 || inputs[0].type != nvinfer1::DataType::kINT8) return 0;
    DwsepParams p = params(inputs, outputs);
    return (size_t)dwsep_int8_workspace_bytes(p);
}

DwsepParams DwsepPlugin::params(const nvinfer1::PluginTensorDesc* inputDesc,
                                const nvinfer1::PluginTensorDesc* outputDesc) const {
    const nvinfer1::Dims& x = inputDesc[0].dims;
    const nvinfer1::Dims& y = outputDesc[0].dims;
    DwsepParams p;
    p.N = x.d[0];
    p.C = x.d[1];
    p.H = x.d[2];
    p.W = x.d[3];
    p.M = inputDesc[3].dims.d[0];
    p.OH = y.d[2];
    p.OW = y.d[3];
    p.KH = attrs_.kernel[0];
    p.KW = attrs_.kernel[1];
    p.SH = attrs_.strides[0];
    p.SW = attrs_.strides[1];
    p.PT = attrs_.pads[0];
    p.PL = attrs_.pads[1];
    p.DH = attrs_.dilations[0];
    p.DW = attrs_.dilations[1];
    p.dw_act = attrs_.dw_act;
    p.pw_act = attrs_.pw_act;
    p.dw_alpha = attrs_.dw_alpha;
    p.dw_beta = attrs_.dw_beta;
    p.pw_alpha = attrs_.pw_alpha;
    p.pw_beta = attrs_.pw_beta;
    return p;
}

int32_t DwsepPlugin::enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                             const void* const* inputs, void* const* outputs, void* workspace,
                             cudaStream_t stream) noexcept {
    const DwsepParams p = params(inputDesc, outputDesc);
    if (inputDesc[1].dims.d[0] != p.C || inputDesc[3].dims.d[1] != p.C) {
        log_error(kName, "weight shapes do not match the input's channel count");
        return -1;
    }
    cudaError_t err;
    if (inputDesc[0].type == nvinfer1::DataType::kINT8) {
        DwsepQuant q = {inputDesc[0].scale, outputDesc[0].scale};
        err = launch_dwsep_int8(p, q, inputs[0], static_cast<const float*>(inputs[1]),
                                static_cast<const float*>(inputs[2]), static_cast<const float*>(inputs[3]),
                                static_cast<const float*>(inputs[4]), outputs[0], workspace, stream);
    } else {
        err = launch_dwsep(p, element_type(inputDesc[0].type), inputs[0], inputs[1], inputs[2], inputs[3], inputs[4],
                           outputs[0], stream);
    }
    if (err != cudaSuccess) {
        log_error(kName, std::string("kernel launch failed: ") + cudaGetErrorString(err));
        return -1;
    }
    return 0;
}

nvinfer1::DataType DwsepPlugin::getOutputDataType(int32_t, const nvinfer1::DataType* inputTypes,
                                                  int32_t) const noexcept {
    return inputTypes[0];
}

const char* DwsepPlugin::getPluginType() const noexcept { return kName; }
const char* DwsepPlugin::getPluginVersion() const noexcept { return kVersion; }
int32_t DwsepPlugin::getNbOutputs() const noexcept { return 1; }
int32_t DwsepPlugin::initialize() noexcept { return valid_ ? 0 : -1; }
void DwsepPlugin::terminate() noexcept {}
size_t DwsepPlugin::getSerializationSize() const noexcept { return sizeof(kMagic) + sizeof(DwsepAttrs); }

void DwsepPlugin::serialize(void* buffer) const noexcept {
    char* p = static_cast<char*>(buffer);
    write_pod(p, kMagic);
    write_pod(p, attrs_);
}

void DwsepPlugin::destroy() noexcept { delete this; }
void DwsepPlugin::setPluginNamespace(const char* ns) noexcept { namespace_ = ns != nullptr ? ns : ""; }
const char* DwsepPlugin::getPluginNamespace() const noexcept { return namespace_.c_str(); }

// ------------------------------------------------------------------------------------------- creator
DwsepPluginCreator::DwsepPluginCreator() {
    using nvinfer1::PluginField;
    using nvinfer1::PluginFieldType;
    fields_.fields = {
        PluginField("kernel_shape", nullptr, PluginFieldType::kINT32, 2),
        PluginField("strides", nullptr, PluginFieldType::kINT32, 2),
        PluginField("pads", nullptr, PluginFieldType::kINT32, 4),
        PluginField("dilations", nullptr, PluginFieldType::kINT32, 2),
        PluginField("dw_activation", nullptr, PluginFieldType::kCHAR, 1),
        PluginField("pw_activation", nullptr, PluginFieldType::kCHAR, 1),
        PluginField("dw_alpha", nullptr, PluginFieldType::kFLOAT32, 1),
        PluginField("dw_beta", nullptr, PluginFieldType::kFLOAT32, 1),
        PluginField("pw_alpha", nullptr, PluginFieldType::kFLOAT32, 1),
        PluginField("pw_beta", nullptr, PluginFieldType::kFLOAT32, 1),
    };
    fields_.finish();
}

const char* DwsepPluginCreator::getPluginName() const noexcept { return kName; }
const char* DwsepPluginCreator::getPluginVersion() const noexcept { return kVersion; }
const nvinfer1::PluginFieldCollection* DwsepPluginCreator::getFieldNames() noexcept { return &fields_.collection; }

nvinfer1::IPluginV2* DwsepPluginCreator::createPlugin(const char*, const nvinfer1::PluginFieldCollection* fc) noexcept {
    Fields f(fc);
    DwsepAttrs a;
    a.strides[0] = a.strides[1] = 1;
    a.dilations[0] = a.dilations[1] = 1;
    a.pads[0] = a.pads[1] = a.pads[2] = a.pads[3] = 0;
    a.dw_alpha = a.dw_beta = a.pw_alpha = a.pw_beta = 0.f;
    if (!f.ints("kernel_shape", a.kernel, 2)) {
        log_error(kName, "missing attribute kernel_shape (2 ints)");
        return nullptr;
    }
    f.ints("strides", a.strides, 2);
    f.ints("pads", a.pads, 4);
    f.ints("dilations", a.dilations, 2);
    f.real("dw_alpha", &a.dw_alpha);
    f.real("dw_beta", &a.dw_beta);
    f.real("pw_alpha", &a.pw_alpha);
    f.real("pw_beta", &a.pw_beta);
    std::string dw = "none", pw = "none";
    f.text("dw_activation", &dw);
    f.text("pw_activation", &pw);
    a.dw_act = activation_from_name(dw);
    a.pw_act = activation_from_name(pw);
    if (a.dw_act < 0 || a.pw_act < 0) {
        log_error(kName, "unknown activation '" + (a.dw_act < 0 ? dw : pw) + "'");
        return nullptr;
    }
    if (a.kernel[0] < 1 || a.kernel[1] < 1 || a.strides[0] < 1 || a.strides[1] < 1 || a.dilations[0] < 1 ||
        a.dilations[1] < 1) {
        log_error(kName, "kernel_shape, strides and dilations must be >= 1");
        return nullptr;
    }
    DwsepPlugin* plugin = new (std::nothrow) DwsepPlugin(a);
    if (plugin != nullptr) plugin->setPluginNamespace(namespace_.c_str());
    return plugin;
}

nvinfer1::IPluginV2* DwsepPluginCreator::deserializePlugin(const char*, const void* data, size_t length) noexcept {
    DwsepPlugin* plugin = new (std::nothrow) DwsepPlugin(data, length);
    if (plugin == nullptr) return nullptr;
    if (!plugin->valid()) {
        log_error(kName, "serialised plugin data is corrupt or from another plugin version");
        delete plugin;
        return nullptr;
    }
    plugin->setPluginNamespace(namespace_.c_str());
    return plugin;
}

void DwsepPluginCreator::setPluginNamespace(const char* ns) noexcept { namespace_ = ns != nullptr ? ns : ""; }
const char* DwsepPluginCreator::getPluginNamespace() const noexcept { return namespace_.c_str(); }

}  // namespace trt
}  // namespace esq
