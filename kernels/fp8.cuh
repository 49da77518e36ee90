// FP8 e4m3 ("fn": bias 7, 3 mantissa bits, no infinities, largest finite 448) for the FP8 KV
// cache (docs/fp8-kv.md). Encoding rounds to nearest even and saturates, as PTX
// `cvt.rn.satfinite.e4m3x2.f32` (sm_89+) does; the emulator's branch mirrors src/cpu/fp8.rs.
#pragma once
#include <stdint.h>

#define E4M3_MAX 448.0f

#ifdef NEMO_EMU
#include <cmath>
__device__ __forceinline__ uint8_t e4m3_from_f32_emu(float x) {
    if (std::isnan(x)) return 0x7f;
    const uint8_t sign = std::signbit(x) ? 0x80 : 0;
    const float a = std::fmin(std::fabs(x), E4M3_MAX);
    if (a < 0x1p-6f) return sign | (uint8_t)std::nearbyint(a * 0x1p9f);  // subnormal steps of 2^-9
    uint32_t bits;
    std::memcpy(&bits, &a, 4);
    const int e = (int)(bits >> 23) - 127;
    const int m = (int)std::nearbyint((std::ldexp(a, -e) - 1.0f) * 8.0f);  // 8 carries into e
    return sign | (uint8_t)(((e + 7) << 3) + m);
}

__device__ __forceinline__ float e4m3_to_f32_emu(uint8_t c) {
    const float sign = (c & 0x80) ? -1.f : 1.f;
    const int e = (c >> 3) & 0xf, m = c & 7;
    if (e == 15 && m == 7) return NAN;
    return sign * (e == 0 ? std::ldexp((float)m, -9) : std::ldexp(1.f + m / 8.f, e - 7));
}
#endif

// Two floats as e4m3 codes in one 16-bit word: `lo` in the low byte.
__device__ __forceinline__ uint16_t e4m3x2_from_f32(float lo, float hi) {
#ifdef NEMO_EMU
    return (uint16_t)(e4m3_from_f32_emu(lo) | (e4m3_from_f32_emu(hi) << 8));
#else
    uint16_t r;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));  // a -> high byte
    return r;
#endif
}

// Four floats as e4m3 codes in one 32-bit word, x[0] in the low byte.
__device__ __forceinline__ uint32_t e4m3x4_from_f32(const float x[4]) {
    return (uint32_t)e4m3x2_from_f32(x[0], x[1]) | ((uint32_t)e4m3x2_from_f32(x[2], x[3]) << 16);
}

// Two e4m3 codes (`lo` the low byte) as floats: exact (every e4m3 value is an f16 value).
__device__ __forceinline__ float2 e4m3x2_to_f32(uint16_t codes) {
#ifdef NEMO_EMU
    return make_float2(e4m3_to_f32_emu(codes & 0xff), e4m3_to_f32_emu(codes >> 8));
#else
    uint32_t h2;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(codes));  // high byte -> high half
    float2 f;
    asm("{\n\t.reg .b16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.f32.f16 %0, l;\n\tcvt.f32.f16 %1, h;\n\t}"
        : "=f"(f.x), "=f"(f.y) : "r"(h2));
    return f;
#endif
}

// Four codes in one 32-bit word (byte i = value i) as floats.
__device__ __forceinline__ void e4m3x4_to_f32(uint32_t codes, float out[4]) {
    const float2 a = e4m3x2_to_f32((uint16_t)(codes & 0xffff)), b = e4m3x2_to_f32((uint16_t)(codes >> 16));
    out[0] = a.x; out[1] = a.y; out[2] = b.x; out[3] = b.y;
}
