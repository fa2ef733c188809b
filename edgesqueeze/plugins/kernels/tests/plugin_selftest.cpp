// Host-only self-test of the TensorRT plugin classes (no GPU, no libnvinfer needed): creators, attribute parsing
// as TensorRT's ONNX parser passes them (ints → kINT32 arrays, strings → kCHAR without a trailing NUL), format
// negotiation, serialisation round trips and rejection of bad attributes or corrupt blobs.
// Built by edgesqueeze.plugins.check.run_plugin_selftest against a TensorRT include folder, with
// ESQ_STATIC_REGISTRATION=0 so that nothing from libnvinfer is referenced.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "dwsep_plugin.h"
#include "plugin_v3.h"
#include "sparse_plugin.h"

using nvinfer1::DataType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
    if (!ok) {
        std::printf("FAIL: %s\n", what);
        ++failures;
    }
}

// Fields the way onnx-tensorrt's loadFields builds them.
struct Attrs {
    std::vector<std::vector<int32_t>> ints;
    std::vector<std::string> strings;
    std::vector<float> floats;
    std::vector<PluginField> fields;
    Attrs() {
        ints.reserve(16);
        strings.reserve(16);
        floats.reserve(16);
    }
    void add_ints(const char* name, std::vector<int32_t> v) {
        ints.push_back(v);
        fields.push_back(PluginField(name, ints.back().data(), PluginFieldType::kINT32, (int32_t)v.size()));
    }
    void add_string(const char* name, const std::string& v) {
        strings.push_back(v);
        fields.push_back(PluginField(name, strings.back().data(), PluginFieldType::kCHAR, (int32_t)v.size()));
    }
    void add_float(const char* name, float v) {
        floats.push_back(v);
        fields.push_back(PluginField(name, &floats.back(), PluginFieldType::kFLOAT32, 1));
    }
    PluginFieldCollection collection() {
        PluginFieldCollection fc;
        fc.nbFields = (int32_t)fields.size();
        fc.fields = fields.data();
        return fc;
    }
};

std::vector<PluginTensorDesc> descs(int n, DataType type) {
    std::vector<PluginTensorDesc> d(n);
    for (auto& x : d) {
        std::memset(&x, 0, sizeof(x));
        x.type = type;
        x.format = TensorFormat::kLINEAR;
        x.scale = 1.f;
    }
    return d;
}

template <typename Plugin>
std::vector<char> bytes_of(const Plugin* p) {
    std::vector<char> b(p->getSerializationSize());
    p->serialize(b.data());
    return b;
}

void test_dwsep() {
    esq::trt::DwsepPluginCreator creator;
    expect(std::string(creator.getPluginName()) == "DepthwiseSeparableConv", "dwsep name");
    expect(std::string(creator.getPluginVersion()) == "1", "dwsep version");
    const PluginFieldCollection* names = creator.getFieldNames();
    expect(names != nullptr && names->nbFields == 10, "dwsep declares its 10 attributes");

    Attrs a;
    a.add_ints("kernel_shape", {3, 3});
    a.add_ints("strides", {2, 2});
    a.add_ints("pads", {1, 1, 1, 1});
    a.add_ints("dilations", {1, 1});
    a.add_string("dw_activation", "clip");
    a.add_string("pw_activation", "hard_swish");
    a.add_float("dw_alpha", 0.f);
    a.add_float("dw_beta", 6.f);
    a.add_float("pw_alpha", 0.f);
    a.add_float("pw_beta", 0.f);
    PluginFieldCollection fc = a.collection();
    nvinfer1::IPluginV2* raw = creator.createPlugin("dwsep", &fc);
    expect(raw != nullptr, "dwsep createPlugin");
    if (raw == nullptr) return;
    auto* plugin = static_cast<esq::trt::DwsepPlugin*>(raw);
    expect(std::string(plugin->getPluginType()) == "DepthwiseSeparableConv" && plugin->getNbOutputs() == 1,
           "dwsep type/outputs");
    expect(plugin->initialize() == 0, "dwsep initialize");

    auto f32 = descs(6, DataType::kFLOAT);
    bool all = true;
    for (int pos = 0; pos < 6; ++pos) all = all && plugin->supportsFormatCombination(pos, f32.data(), 5, 1);
    expect(all, "dwsep accepts FP32 everywhere");
    auto f16 = descs(6, DataType::kHALF);
    expect(plugin->supportsFormatCombination(0, f16.data(), 5, 1) &&
               plugin->supportsFormatCombination(5, f16.data(), 5, 1), "dwsep accepts FP16");
    auto i8 = descs(6, DataType::kFLOAT);
    i8[0].type = i8[5].type = DataType::kINT8;
    const int shapes[3][5] = {{0, 1, 8, 4, 4}, {3, 16, 8, 1, 1}, {5, 1, 16, 4, 4}};  // X, W_pw, Y
    for (const auto& s : shapes) {
        i8[s[0]].dims.nbDims = 4;
        for (int k = 0; k < 4; ++k) i8[s[0]].dims.d[k] = s[k + 1];
    }
    all = true;
    for (int pos = 0; pos < 6; ++pos) all = all && plugin->supportsFormatCombination(pos, i8.data(), 5, 1);
    expect(all, "dwsep accepts INT8 X and Y with FP32 weights");
    expect(plugin->getWorkspaceSize(i8.data(), 5, i8.data() + 5, 1) > 0 &&
               plugin->getWorkspaceSize(f32.data(), 5, f32.data() + 5, 1) == 0, "dwsep INT8 workspace only");
    auto i8w = descs(6, DataType::kINT8);
    expect(!plugin->supportsFormatCombination(1, i8w.data(), 5, 1), "dwsep rejects INT8 weights");
    auto mixed = descs(6, DataType::kFLOAT);
    mixed[3].type = DataType::kHALF;
    expect(!plugin->supportsFormatCombination(3, mixed.data(), 5, 1), "dwsep rejects mixed precision");
    auto i32 = descs(6, DataType::kINT32);
    expect(!plugin->supportsFormatCombination(0, i32.data(), 5, 1), "dwsep rejects int32 input");
    expect(!plugin->supportsFormatCombination(0, f32.data(), 4, 1), "dwsep rejects 4 inputs");
    DataType in[5] = {DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kHALF};
    expect(plugin->getOutputDataType(0, in, 5) == DataType::kHALF, "dwsep output type follows input");

    std::vector<char> blob = bytes_of(plugin);
    nvinfer1::IPluginV2* back = creator.deserializePlugin("dwsep", blob.data(), blob.size());
    expect(back != nullptr, "dwsep deserialize");
    if (back != nullptr) {
        expect(bytes_of(static_cast<esq::trt::DwsepPlugin*>(back)) == blob, "dwsep round trip is exact");
        back->destroy();
    }
    nvinfer1::IPluginV2DynamicExt* copy = plugin->clone();
    expect(copy != nullptr && bytes_of(static_cast<esq::trt::DwsepPlugin*>(copy)) == blob, "dwsep clone");
    if (copy != nullptr) copy->destroy();
    blob[0] ^= 0x5a;
    expect(creator.deserializePlugin("dwsep", blob.data(), blob.size()) == nullptr, "dwsep rejects a corrupt blob");
    expect(creator.deserializePlugin("dwsep", blob.data(), blob.size() - 1) == nullptr, "dwsep rejects a short blob");
    plugin->destroy();

    Attrs bad;
    bad.add_ints("kernel_shape", {3, 3});
    bad.add_string("dw_activation", "gelu");
    PluginFieldCollection bfc = bad.collection();
    expect(creator.createPlugin("bad", &bfc) == nullptr, "dwsep rejects an unknown activation");
    Attrs nokernel;
    nokernel.add_ints("strides", {1, 1});
    PluginFieldCollection nfc = nokernel.collection();
    expect(creator.createPlugin("bad", &nfc) == nullptr, "dwsep needs kernel_shape");
}

void test_sparse() {
    esq::trt::SparseConvPluginCreator creator;
    expect(std::string(creator.getPluginName()) == "SparseConv", "sparse name");
    expect(creator.getFieldNames()->nbFields == 8, "sparse declares its 8 attributes");
    for (int csr = 0; csr < 2; ++csr) {
        Attrs a;
        a.add_string("sparse_format", csr ? "csr" : "2:4");
        a.add_ints("kernel_shape", {1, 1});
        a.add_string("activation", "relu");
        PluginFieldCollection fc = a.collection();
        nvinfer1::IPluginV2* raw = creator.createPlugin("s", &fc);
        expect(raw != nullptr, "sparse createPlugin");
        if (raw == nullptr) continue;
        auto* plugin = static_cast<esq::trt::SparseConvPlugin*>(raw);
        const int nb = csr ? 5 : 4;
        auto d = descs(nb + 1, DataType::kFLOAT);
        d[2].type = DataType::kINT32;
        if (csr) d[3].type = DataType::kINT32;
        bool all = true;
        for (int pos = 0; pos <= nb; ++pos) all = all && plugin->supportsFormatCombination(pos, d.data(), nb, 1);
        expect(all, "sparse accepts FP32 data with int32 indices");
        d[2].type = DataType::kFLOAT;
        expect(!plugin->supportsFormatCombination(2, d.data(), nb, 1), "sparse wants int32 indices");
        expect(!plugin->supportsFormatCombination(0, d.data(), csr ? 4 : 5, 1), "sparse checks the input count");
        std::vector<char> blob = bytes_of(plugin);
        nvinfer1::IPluginV2* back = creator.deserializePlugin("s", blob.data(), blob.size());
        expect(back != nullptr && bytes_of(static_cast<esq::trt::SparseConvPlugin*>(back)) == blob,
               "sparse round trip");
        if (back != nullptr) back->destroy();
        plugin->destroy();
    }
    Attrs nofmt;
    nofmt.add_ints("kernel_shape", {1, 1});
    PluginFieldCollection fc = nofmt.collection();
    expect(creator.createPlugin("s", &fc) == nullptr, "sparse needs sparse_format");
}

#if NV_TENSORRT_MAJOR >= 10
// Field contents as comparable text: name, type, length and bytes of each field.
std::string describe(const PluginFieldCollection* fc) {
    std::string out;
    for (int32_t i = 0; i < fc->nbFields; ++i) {
        const PluginField& f = fc->fields[i];
        size_t unit = f.type == PluginFieldType::kCHAR ? 1 : 4;
        out += std::string(f.name) + ":" + std::to_string((int)f.type) + ":" + std::to_string(f.length) + ":";
        out.append(static_cast<const char*>(f.data), unit * f.length);
        out += ";";
    }
    return out;
}

template <typename V2Plugin, typename V2Creator>
void test_v3(Attrs& attrs, int nb_inputs, const char* name) {
    esq::trt::PluginCreatorV3<V2Plugin, V2Creator> creator;
    expect(std::string(creator.getPluginName()) == name && std::string(creator.getPluginVersion()) == "1",
           "v3 creator name/version");
    expect(std::string(creator.getInterfaceInfo().kind) == "PLUGIN CREATOR_V3ONE", "v3 creator kind");
    PluginFieldCollection fc = attrs.collection();
    nvinfer1::IPluginV3* plugin = creator.createPlugin(name, &fc, nvinfer1::TensorRTPhase::kBUILD);
    expect(plugin != nullptr, "v3 createPlugin");
    if (plugin == nullptr) return;
    auto* core = static_cast<nvinfer1::IPluginV3OneCore*>(
        plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kCORE));
    auto* build = static_cast<nvinfer1::IPluginV3OneBuild*>(
        plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
        plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
    expect(core && build && runtime, "v3 capabilities");
    if (!(core && build && runtime)) return;
    expect(std::string(core->getPluginName()) == name, "v3 core name");
    expect(build->getNbOutputs() == 1, "v3 outputs");
    std::vector<nvinfer1::DynamicPluginTensorDesc> d(nb_inputs + 1);
    for (auto& x : d) {
        std::memset(&x, 0, sizeof(x));
        x.desc.type = DataType::kHALF;
        x.desc.format = TensorFormat::kLINEAR;
    }
    if (std::string(name) == "SparseConv") {
        d[2].desc.type = DataType::kINT32;
        if (nb_inputs == 5) d[3].desc.type = DataType::kINT32;
    }
    bool all = true;
    for (int pos = 0; pos <= nb_inputs; ++pos) all = all && build->supportsFormatCombination(pos, d.data(), nb_inputs, 1);
    expect(all, "v3 accepts FP16");
    DataType in[5] = {DataType::kHALF, DataType::kHALF, DataType::kINT32, DataType::kHALF, DataType::kHALF};
    DataType outType = DataType::kFLOAT;
    expect(build->getOutputDataTypes(&outType, 1, in, nb_inputs) == 0 && outType == DataType::kHALF,
           "v3 output type");
    std::string first = describe(runtime->getFieldsToSerialize());
    PluginFieldCollection again = *runtime->getFieldsToSerialize();
    nvinfer1::IPluginV3* back = creator.createPlugin(name, &again, nvinfer1::TensorRTPhase::kRUNTIME);
    expect(back != nullptr, "v3 runtime re-creation from serialised fields");
    if (back != nullptr) {
        auto* rt = static_cast<nvinfer1::IPluginV3OneRuntime*>(
            back->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
        expect(describe(rt->getFieldsToSerialize()) == first, "v3 serialisation round trip");
        delete back;
    }
    nvinfer1::IPluginV3* copy = runtime->attachToContext(nullptr);
    expect(copy != nullptr, "v3 attachToContext clones");
    delete copy;
    delete plugin;
}

void test_plugin_v3() {
    Attrs a;
    a.add_ints("kernel_shape", {5, 5});
    a.add_ints("pads", {2, 2, 2, 2});
    a.add_string("dw_activation", "leaky_relu");
    a.add_float("dw_alpha", 0.1f);
    test_v3<esq::trt::DwsepPlugin, esq::trt::DwsepPluginCreator>(a, 5, "DepthwiseSeparableConv");
    Attrs s;
    s.add_string("sparse_format", "csr");
    s.add_ints("kernel_shape", {3, 3});
    s.add_string("activation", "hard_sigmoid");
    s.add_float("alpha", 0.2f);
    s.add_float("beta", 0.5f);
    test_v3<esq::trt::SparseConvPlugin, esq::trt::SparseConvPluginCreator>(s, 5, "SparseConv");
}
#endif

}  // namespace

int main() {
    test_dwsep();
    test_sparse();
#if NV_TENSORRT_MAJOR >= 10
    test_plugin_v3();
#endif
    if (failures == 0) std::printf("plugin self-test OK (TensorRT %d.%d headers)\n", NV_TENSORRT_MAJOR,
                                   NV_TENSORRT_MINOR);
    return failures == 0 ? 0 : 1;
}
