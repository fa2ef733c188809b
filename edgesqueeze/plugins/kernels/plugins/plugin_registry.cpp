// Registration of the edgesqueeze plugin creators.
//
// * TensorRT 8.x: the library registers its creators when it is loaded (REGISTER_TENSORRT_PLUGIN), which is
//   what `trtexec --plugins=lib.so` and `ctypes.CDLL(lib, RTLD_GLOBAL)` rely on.
// * TensorRT 10: `trtexec --dynamicPlugins=lib.so` and IPluginRegistry::loadLibrary call getCreators() and
//   register what it returns, so static registration is off by default there (registering the same creator
//   twice fails), and getCreators()/getPluginCreators() are exported instead. -DESQ_STATIC_REGISTRATION=1/0
//   overrides the choice (e.g. 0 on TensorRT 8.6 to use loadLibrary, 1 on 10.x for `--staticPlugins`).
//
// * -DESQ_PLUGIN_V3=1 (TensorRT >= 10): getCreators() returns IPluginCreatorV3One creators of the same names
//   (plugin_v3.h, an adapter over the same code) instead of the IPluginV2DynamicExt ones.
#include "dwsep_plugin.h"
#include "plugin_v3.h"
#include "sparse_plugin.h"

#if ESQ_TRT_VERSION >= 806
#include <mutex>
#endif

#if defined(ESQ_PLUGIN_V3) && ESQ_PLUGIN_V3 && NV_TENSORRT_MAJOR < 10
#error "ESQ_PLUGIN_V3 needs TensorRT 10 or newer"
#endif
#if defined(ESQ_PLUGIN_V3) && ESQ_PLUGIN_V3
#define ESQ_USE_V3 1
#undef ESQ_STATIC_REGISTRATION
#define ESQ_STATIC_REGISTRATION 0
#else
#define ESQ_USE_V3 0
#endif

#if !defined(ESQ_STATIC_REGISTRATION)
#if NV_TENSORRT_MAJOR >= 10
#define ESQ_STATIC_REGISTRATION 0
#else
#define ESQ_STATIC_REGISTRATION 1
#endif
#endif

namespace esq {
namespace trt {

#if ESQ_STATIC_REGISTRATION
REGISTER_TENSORRT_PLUGIN(DwsepPluginCreator);
REGISTER_TENSORRT_PLUGIN(SparseConvPluginCreator);
#else
DwsepPluginCreator& dwsep_creator() {
    static DwsepPluginCreator creator;
    return creator;
}
SparseConvPluginCreator& sparse_creator() {
    static SparseConvPluginCreator creator;
    return creator;
}
#endif

}  // namespace trt
}  // namespace esq

#if ESQ_TRT_VERSION >= 806
namespace {
nvinfer1::ILoggerFinder* g_logger_finder = nullptr;
std::mutex g_logger_mutex;
}  // namespace

// TensorRT hands the library its logger finder; the plugins log to stderr, which works on every version.
extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    std::lock_guard<std::mutex> lock(g_logger_mutex);
    if (g_logger_finder == nullptr) g_logger_finder = finder;
}
#endif

#if !ESQ_STATIC_REGISTRATION && !ESQ_USE_V3 && ESQ_TRT_VERSION >= 806
extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreator* const* getPluginCreators(
    int32_t& nbCreators) {
    static nvinfer1::IPluginCreator* creators[] = {&esq::trt::dwsep_creator(), &esq::trt::sparse_creator()};
    nbCreators = 2;
    return creators;
}
#endif

#if !ESQ_STATIC_REGISTRATION && NV_TENSORRT_MAJOR >= 10
extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators) {
#if ESQ_USE_V3
    static esq::trt::PluginCreatorV3<esq::trt::DwsepPlugin, esq::trt::DwsepPluginCreator> dwsep_v3;
    static esq::trt::PluginCreatorV3<esq::trt::SparseConvPlugin, esq::trt::SparseConvPluginCreator> sparse_v3;
    static nvinfer1::IPluginCreatorInterface* creators[] = {&dwsep_v3, &sparse_v3};
#else
    static nvinfer1::IPluginCreatorInterface* creators[] = {&esq::trt::dwsep_creator(), &esq::trt::sparse_creator()};
#endif
    nbCreators = 2;
    return creators;
}
#endif
