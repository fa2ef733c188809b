// TensorRT plugin for edgesqueeze::SparseConv.
//   sparse_format "2:4": X, values [M, R/2], metadata int32 [M, ceil(R/32)], B [M] → Y
//   sparse_format "csr": X, values [nnz], col int32 [nnz], row_ptr int32 [M+1], B [M] → Y
// R = kh*kw*C. The weights arrive already compressed (they are the ONNX model's initializers).
#include "sparse_plugin.h"

#include <new>

namespace esq {
namespace trt {

namespace {
const char* const kName = "SparseConv";
const char* const kVersion = "1";
const uint32_t kMagic = 0x45535331u;  // "ESS1"
}  // namespace

SparseConvPlugin::SparseConvPlugin(const SparseAttrs& attrs) : attrs_(attrs) {}

SparseConvPlugin::SparseConvPlugin(const void* data, size_t length) {
    const char* p = static_cast<const char*>(data);
    const char* end = p + length;
    uint32_t magic = 0;
    valid_ = read_pod(p, end, &magic) && magic == kMagic && read_pod(p, end, &attrs_) && p == end &&
             (attrs_.format == kFormat24 || attrs_.format == kFormatCsr);
}

void SparseConvPlugin::exportFields(FieldStore& out) const {
    out.add_string("sparse_format", attrs_.format == kFormat24 ? "2:4" : "csr");
    out.add_ints("kernel_shape", attrs_.kernel, 2);
    out.add_ints("strides", attrs_.strides, 2);
    out.add_ints("pads", attrs_.pads, 4);
    out.add_ints("dilations", attrs_.dilations, 2);
    out.add_string("activation", activation_name(attrs_.act));
    out.add_float("alpha", attrs_.alpha);
    out.add_float("beta", attrs_.beta);
}

nvinfer1::IPluginV2DynamicExt* SparseConvPlugin::clone() const noexcept {
    SparseConvPlugin* copy = new (std::nothrow) SparseConvPlugin(attrs_);
    if (copy != nullptr) copy->setPluginNamespace(namespace_.c_str());
    return copy;
}

nvinfer1::DimsExprs SparseConvPlugin::getOutputDimensions(int32_t outputIndex, const nvinfer1::DimsExprs* inputs,
                                                          int32_t nbInputs, nvinfer1::IExprBuilder& b) noexcept {
    nvinfer1::DimsExprs out;
    out.nbDims = 0;
    if (outputIndex != 0 || nbInputs != num_inputs() || inputs[0].nbDims != 4 ||
        inputs[nbInputs - 1].nbDims != 1) {
        log_error(kName, attrs_.format == kFormat24 ? "2:4 expects inputs X[N,C,H,W], values, metadata, B[M]"
                                                    : "csr expects inputs X[N,C,H,W], values, col, row_ptr, B[M]");
        return out;
    }
    out.nbDims = 4;
    out.d[0] = inputs[0].d[0];
    out.d[1] = inputs[nbInputs - 1].d[0];
    out.d[2] = conv_out_expr(b, inputs[0].d[2], attrs_.kernel[0], attrs_.strides[0], attrs_.pads[0], attrs_.pads[2],
                             attrs_.dilations[0]);
    out.d[3] = conv_out_expr(b, inputs[0].d[3], attrs_.kernel[1], attrs_.strides[1], attrs_.pads[1], attrs_.pads[3],
                             attrs_.dilations[1]);
    return out;
}

bool SparseConvPlugin::supportsFormatCombination(int32_t pos, const nvinfer1::PluginTensorDesc* inOut,
                                                 int32_t nbInputs, int32_t nbOutputs) noexcept {
    if (nbInputs != num_inputs() || nbOutputs != 1 || pos < 0 || pos > nbInputs) return false;
    const nvinfer1::PluginTensorDesc& d = inOut[pos];
    if (d.format != nvinfer1::TensorFormat::kLINEAR) return false;
    if (pos == 0) return is_float_or_half(d.type);
    if (pos < nbInputs && is_index_input(pos)) return d.type == nvinfer1::DataType::kINT32;
    return d.type == inOut[0].type;
}

void SparseConvPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                                       const nvinfer1::DynamicPluginTensorDesc*, int32_t) noexcept {
    if (nbInputs != num_inputs() || attrs_.format != kFormat24) return;
    const int c = in[0].desc.dims.d[1];
    if (c > 0 && c % 4 != 0) log_error(kName, "2:4 needs the input channel count to be a multiple of 4");
}

size_t SparseConvPlugin::getWorkspaceSize(const nvinfer1::PluginTensorDesc*, int32_t,
                                          const nvinfer1::PluginTensorDesc*, int32_t) const noexcept {
    return 0;
}

int32_t SparseConvPlugin::enqueue(const nvinfer1::PluginTensorDesc* inputDesc,
                                  const nvinfer1::PluginTensorDesc* outputDesc, const void* const* inputs,
                                  void* const* outputs, void*, cudaStream_t stream) noexcept {
    const nvinfer1::Dims& x = inputDesc[0].dims;
    const nvinfer1::Dims& y = outputDesc[0].dims;
    const int nb = num_inputs();
    SparseConvParams p;
    p.N = x.d[0];
    p.C = x.d[1];
    p.H = x.d[2];
    p.W = x.d[3];
    p.M = inputDesc[nb - 1].dims.d[0];
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
    p.act = attrs_.act;
    p.alpha = attrs_.alpha;
    p.beta = attrs_.beta;
    const ElementType type = element_type(inputDesc[0].type);
    const int r = sparse_reduction_size(p);
    cudaError_t err;
    if (attrs_.format == kFormat24) {
        const nvinfer1::Dims& v = inputDesc[1].dims;
        const nvinfer1::Dims& m = inputDesc[2].dims;
        if (p.C % 4 != 0 || v.nbDims != 2 || v.d[0] != p.M || v.d[1] != r / 2 || m.nbDims != 2 || m.d[0] != p.M ||
            m.d[1] != sparse24_meta_words(p)) {
            log_error(kName, "2:4 values must be [M, R/2] and metadata [M, ceil(R/32)] with R = kh*kw*C, C % 4 == 0");
            return -1;
        }
        err = launch_sparse24(p, type, inputs[0], inputs[1], static_cast<const int*>(inputs[2]), inputs[3],
                              outputs[0], stream);
    } else {
        if (inputDesc[3].dims.nbDims != 1 || inputDesc[3].dims.d[0] != p.M + 1 ||
            inputDesc[1].dims.d[0] != inputDesc[2].dims.d[0]) {
            log_error(kName, "csr row_ptr must be [M+1] and col as long as values");
            return -1;
        }
        err = launch_sparse_csr(p, type, inputs[0], inputs[1], static_cast<const int*>(inputs[2]),
                                static_cast<const int*>(inputs[3]), inputs[4], outputs[0], stream);
    }
    if (err != cudaSuccess) {
        log_error(kName, std::string("kernel launch failed: ") + cudaGetErrorString(err));
        return -1;
    }
    return 0;
}

nvinfer1::DataType SparseConvPlugin::getOutputDataType(int32_t, const nvinfer1::DataType* inputTypes,
                                                       int32_t) const noexcept {
    return inputTypes[0];
}

const char* SparseConvPlugin::getPluginType() const noexcept { return kName; }
const char* SparseConvPlugin::getPluginVersion() const noexcept { return kVersion; }
int32_t SparseConvPlugin::getNbOutputs() const noexcept { return 1; }
int32_t SparseConvPlugin::initialize() noexcept { return valid_ ? 0 : -1; }
void SparseConvPlugin::terminate() noexcept {}
size_t SparseConvPlugin::getSerializationSize() const noexcept { return sizeof(kMagic) + sizeof(SparseAttrs); }

void SparseConvPlugin::serialize(void* buffer) const noexcept {
    char* p = static_cast<char*>(buffer);
    write_pod(p, kMagic);
    write_pod(p, attrs_);
}

void SparseConvPlugin::destroy() noexcept { delete this; }
void SparseConvPlugin::setPluginNamespace(const char* ns) noexcept { namespace_ = ns != nullptr ? ns : ""; }
const char* SparseConvPlugin::getPluginNamespace() const noexcept { return namespace_.c_str(); }

// ------------------------------------------------------------------------------------------- creator
SparseConvPluginCreator::SparseConvPluginCreator() {
    using nvinfer1::PluginField;
    using nvinfer1::PluginFieldType;
    fields_.fields = {
        PluginField("sparse_format", nullptr, PluginFieldType::kCHAR, 1),
        PluginField("kernel_shape", nullptr, PluginFieldType::kINT32, 2),
        PluginField("strides", nullptr, PluginFieldType::kINT32, 2),
        PluginField("pads", nullptr, PluginFieldType::kINT32, 4),
        PluginField("dilations", nullptr, PluginFieldType::kINT32, 2),
        PluginField("activation", nullptr, PluginFieldType::kCHAR, 1),
        PluginField("alpha", nullptr, PluginFieldType::kFLOAT32, 1),
        PluginField("beta", nullptr, PluginFieldType::kFLOAT32, 1),
    };
    fields_.finish();
}

const char* SparseConvPluginCreator::getPluginName() const noexcept { return kName; }
const char* SparseConvPluginCreator::getPluginVersion() const noexcept { return kVersion; }
const nvinfer1::PluginFieldCollection* SparseConvPluginCreator::getFieldNames() noexcept {
    return &fields_.collection;
}

nvinfer1::IPluginV2* SparseConvPluginCreator::createPlugin(const char*,
                                                           const nvinfer1::PluginFieldCollection* fc) noexcept {
    Fields f(fc);
    SparseAttrs a;
    a.strides[0] = a.strides[1] = 1;
    a.dilations[0] = a.dilations[1] = 1;
    a.pads[0] = a.pads[1] = a.pads[2] = a.pads[3] = 0;
    a.alpha = a.beta = 0.f;
    std::string format, act = "none";
    if (!f.text("sparse_format", &format) || (format != "2:4" && format != "csr")) {
        log_error(kName, "attribute sparse_format must be \"2:4\" or \"csr\"");
        return nullptr;
    }
    a.format = format == "2:4" ? kFormat24 : kFormatCsr;
    if (!f.ints("kernel_shape", a.kernel, 2)) {
        log_error(kName, "missing attribute kernel_shape (2 ints)");
        return nullptr;
    }
    f.ints("strides", a.strides, 2);
    f.ints("pads", a.pads, 4);
    f.ints("dilations", a.dilations, 2);
    f.text("activation", &act);
    f.real("alpha", &a.alpha);
    f.real("beta", &a.beta);
    a.act = activation_from_name(act);
    if (a.act < 0) {
        log_error(kName, "unknown activation '" + act + "'");
        return nullptr;
    }
    SparseConvPlugin* plugin = new (std::nothrow) SparseConvPlugin(a);
    if (plugin != nullptr) plugin->setPluginNamespace(namespace_.c_str());
    return plugin;
}

nvinfer1::IPluginV2* SparseConvPluginCreator::deserializePlugin(const char*, const void* data,
                                                                size_t length) noexcept {
    SparseConvPlugin* plugin = new (std::nothrow) SparseConvPlugin(data, length);
    if (plugin == nullptr) return nullptr;
    if (!plugin->valid()) {
        log_error(kName, "serialised plugin data is corrupt or from another plugin version");
        delete plugin;
        return nullptr;
    }
    plugin->setPluginNamespace(namespace_.c_str());
    return plugin;
}

void SparseConvPluginCreator::setPluginNamespace(const char* ns) noexcept { namespace_ = ns != nullptr ? ns : ""; }
const char* SparseConvPluginCreator::getPluginNamespace() const noexcept { return namespace_.c_str(); }

}  // namespace trt
}  // namespace esq
