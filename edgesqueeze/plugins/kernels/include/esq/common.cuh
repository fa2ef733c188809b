// Shared definitions of the edgesqueeze kernels: element types, activations, index helpers.
//
// Every kernel in this library is written in two layers:
//   * `__host__ __device__` functions (ESQ_HD) that compute one output or one stage of a tile for
//     one thread index. They hold all the arithmetic.
//   * `__global__` kernels that only map blockIdx/threadIdx to those functions.
// The same headers compile with g++ (no CUDA toolkit needed) so the CPU test harness
// (tests/host_harness.cpp) runs the arithmetic for every block and thread index.
//
// C++14 only: JetPack 4.6 ships CUDA 10.2, whose nvcc stops at C++14.
#ifndef ESQ_COMMON_CUH
#define ESQ_COMMON_CUH

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define ESQ_HD __host__ __device__ __forceinline__
#define ESQ_DEVICE_COMPILE 1
#define ESQ_UNROLL _Pragma("unroll")
#include <cuda_fp16.h>
#else
#define ESQ_HD inline
#define ESQ_DEVICE_COMPILE 0
#define ESQ_UNROLL
#include <cmath>
#include <cstdint>
#include <cstring>
#endif

namespace esq {

// ---------------------------------------------------------------------------------------------
// Element types. FP16 data is stored as IEEE binary16; arithmetic accumulates in FP32.
// ---------------------------------------------------------------------------------------------
#if ESQ_DEVICE_COMPILE
typedef __half half_t;
typedef __half2 half2_t;
ESQ_HD float to_float(float v) { return v; }
ESQ_HD float to_float(half_t v) { return __half2float(v); }
template <typename T> ESQ_HD T from_float(float v);
template <> ESQ_HD float from_float<float>(float v) { return v; }
template <> ESQ_HD half_t from_float<half_t>(float v) { return __float2half_rn(v); }
#else
// Host build (g++ harness): a bit-exact software binary16 with round-to-nearest-even conversion,
// the same conversion __float2half_rn performs on the GPU.
struct half_t {
    unsigned short bits;
};
struct half2_t {
    half_t x, y;
};
inline float half_bits_to_float(unsigned short h) {
    unsigned int sign = (unsigned int)(h & 0x8000u) << 16;
    unsigned int exp = (h >> 10) & 0x1fu;
    unsigned int man = h & 0x3ffu;
    unsigned int f;
    if (exp == 0) {
        if (man == 0) {
            f = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do { man <<= 1; ++e; } while ((man & 0x400u) == 0);
            man &= 0x3ffu;
            f = sign | ((unsigned int)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 31) {
        f = sign | 0x7f800000u | (man << 13);
    } else {
        f = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float out;
    std::memcpy(&out, &f, sizeof(out));
    return out;
}
inline unsigned short float_to_half_bits(float v) {
    unsigned int f;
    std::memcpy(&f, &v, sizeof(f));
    unsigned int sign = (f >> 16) & 0x8000u;
    unsigned int absf = f & 0x7fffffffu;
    if (absf >= 0x7f800000u) {  // inf or nan
        return (unsigned short)(sign | 0x7c00u | (absf > 0x7f800000u ? 0x200u : 0u));
    }
    if (absf >= 0x477ff000u) {  // rounds to >= 65520: overflow to inf
        return (unsigned short)(sign | 0x7c00u);
    }
    if (absf < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
        if (absf < 0x33000000u) return (unsigned short)sign;  // < 2^-25 rounds to zero
        unsigned int e = absf >> 23;
        unsigned int man = (absf & 0x7fffffu) | 0x800000u;
        unsigned int shift = 126 - e;  // 14 - (e - 127) + 13 - 1 ... value = man * 2^(e-150)
        // half subnormal unit is 2^-24: result = man * 2^(e - 150 + 24) = man >> (126 - e)
        unsigned int q = man >> shift;
        unsigned int rem = man & ((1u << shift) - 1u);
        unsigned int halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
        return (unsigned short)(sign | q);
    }
    unsigned int e = (absf >> 23) - 127 + 15;
    unsigned int man = absf & 0x7fffffu;
    unsigned int q = (e << 10) | (man >> 13);
    unsigned int rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;  // may carry into the exponent: correct
    return (unsigned short)(sign | q);
}
inline float to_float(float v) { return v; }
inline float to_float(half_t v) { return half_bits_to_float(v.bits); }
template <typename T> inline T from_float(float v);
template <> inline float from_float<float>(float v) { return v; }
template <> inline half_t from_float<half_t>(float v) {
    half_t h;
    h.bits = float_to_half_bits(v);
    return h;
}
#endif

// Two adjacent FP16 values loaded as one 32-bit word (half2) and widened to FP32.
// `p` must be 4-byte aligned (an even element index of a 4-byte-aligned array).
ESQ_HD void load_half2_as_float2(const half_t* p, float& a, float& b) {
#if defined(__CUDA_ARCH__)
    float2 f = __half22float2(*reinterpret_cast<const half2_t*>(p));
    a = f.x;
    b = f.y;
#else
    a = to_float(p[0]);
    b = to_float(p[1]);
#endif
}
ESQ_HD void load_pair_as_float2(const float* p, float& a, float& b) {
    a = p[0];
    b = p[1];
}
ESQ_HD void load_pair_as_float2(const half_t* p, float& a, float& b) { load_half2_as_float2(p, a, b); }

// ---------------------------------------------------------------------------------------------
// Activations: the same names and parameters as the ONNX custom nodes' attributes.
//   clip: min(max(x, alpha), beta)       leaky_relu: x < 0 ? alpha * x : x
//   hard_sigmoid: max(0, min(1, alpha * x + beta))     hard_swish: x * max(0, min(1, x / 6 + 1/2))
// ---------------------------------------------------------------------------------------------
enum Activation {
    kActNone = 0,
    kActRelu = 1,
    kActClip = 2,
    kActLeakyRelu = 3,
    kActSigmoid = 4,
    kActHardSigmoid = 5,
    kActHardSwish = 6
};

ESQ_HD float esq_exp(float x) {
#if defined(__CUDA_ARCH__)
    return expf(x);
#else
    return std::exp(x);
#endif
}

ESQ_HD float apply_activation(int act, float x, float alpha, float beta) {
    switch (act) {
        case kActRelu: return x > 0.f ? x : 0.f;
        case kActClip: return x < alpha ? alpha : (x > beta ? beta : x);
        case kActLeakyRelu: return x < 0.f ? alpha * x : x;
        case kActSigmoid: return 1.f / (1.f + esq_exp(-x));
        case kActHardSigmoid: {
            float y = alpha * x + beta;
            return y < 0.f ? 0.f : (y > 1.f ? 1.f : y);
        }
        case kActHardSwish: {
            float y = x * (1.f / 6.f) + 0.5f;
            return x * (y < 0.f ? 0.f : (y > 1.f ? 1.f : y));
        }
        default: return x;
    }
}

ESQ_HD int ceil_div(int a, int b) { return (a + b - 1) / b; }
ESQ_HD int round_up(int a, int b) { return ceil_div(a, b) * b; }

// ---------------------------------------------------------------------------------------------
// Vector shared-memory accesses (one LDS.128 / LDS.64 on the GPU) and the low-precision arithmetic of the fast
// paths, with bit-faithful host versions for the g++ harness.
// ---------------------------------------------------------------------------------------------
struct F4 {
    float v[4];
};
struct I4 {
    int v[4];
};
ESQ_HD F4 lds4(const float* p) {  // p 16-byte aligned
#if defined(__CUDA_ARCH__)
    float4 t = *reinterpret_cast<const float4*>(p);
    F4 r = {{t.x, t.y, t.z, t.w}};
#else
    F4 r = {{p[0], p[1], p[2], p[3]}};
#endif
    return r;
}
ESQ_HD I4 lds4(const int* p) {  // p 16-byte aligned
#if defined(__CUDA_ARCH__)
    int4 t = *reinterpret_cast<const int4*>(p);
    I4 r = {{t.x, t.y, t.z, t.w}};
#else
    I4 r = {{p[0], p[1], p[2], p[3]}};
#endif
    return r;
}

// Dot product of four signed 8-bit lanes plus an accumulator: __dp4a (IDP4A) on sm_61 and newer.
ESQ_HD int dot4_i8(int a, int b, int c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 610
    return __dp4a(a, b, c);
#else
    for (int k = 0; k < 4; ++k) c += (int)(signed char)(a >> (8 * k)) * (int)(signed char)(b >> (8 * k));
    return c;
#endif
}
ESQ_HD int pack_i8x4(int a, int b, int c, int d) {
    return (int)(((unsigned int)a & 0xffu) | (((unsigned int)b & 0xffu) << 8) | (((unsigned int)c & 0xffu) << 16) |
                 (((unsigned int)d & 0xffu) << 24));
}
// Round to nearest even and saturate to [lo, hi] (TensorRT's INT8 quantisation).
ESQ_HD int quantize_rne(float v, int lo, int hi) {
#if defined(__CUDA_ARCH__)
    int q = __float2int_rn(v);
#elif ESQ_DEVICE_COMPILE
    int q = (int)rintf(v);  // nvcc's host pass (never run: the launchers only run the device code)
#else
    int q = (int)std::nearbyint(v);  // default rounding mode: to nearest even
#endif
    return q < lo ? lo : (q > hi ? hi : q);
}
ESQ_HD float to_float(signed char v) { return (float)v; }

// half2 fused multiply-add (HFMA2 on sm_53+): one rounding to binary16 per lane.
ESQ_HD half2_t hfma2(half2_t a, half2_t b, half2_t c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 530
    return __hfma2(a, b, c);
#else
    half2_t r;
    r.x = from_float<half_t>((float)((double)to_float(a.x) * to_float(b.x) + to_float(c.x)));
    r.y = from_float<half_t>((float)((double)to_float(a.y) * to_float(b.y) + to_float(c.y)));
    return r;
#endif
}
ESQ_HD half2_t make_half2_of(float lo, float hi) {
#if ESQ_DEVICE_COMPILE
    return __floats2half2_rn(lo, hi);
#else
    half2_t r;
    r.x = from_float<half_t>(lo);
    r.y = from_float<half_t>(hi);
    return r;
#endif
}
ESQ_HD float half2_lo(half2_t v) {
#if ESQ_DEVICE_COMPILE
    return __low2float(v);
#else
    return to_float(v.x);
#endif
}
ESQ_HD float half2_hi(half2_t v) {
#if ESQ_DEVICE_COMPILE
    return __high2float(v);
#else
    return to_float(v.y);
#endif
}

// Output size of a convolution along one axis (ONNX semantics, explicit pads).
ESQ_HD int conv_out_size(int in, int kernel, int stride, int pad_begin, int pad_end, int dilation) {
    return (in + pad_begin + pad_end - dilation * (kernel - 1) - 1) / stride + 1;
}

}  // namespace esq

#endif  // ESQ_COMMON_CUH
